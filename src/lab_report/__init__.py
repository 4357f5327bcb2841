"""The lab report: the run's own numbers and figures in the lab manual's order, as one HTML file
(and its PDF). additions.py computes what no other stage shows (dense against conv parameters, a
pixel normalised, one neuron term by term, BatchNorm before and after, a MixUp pair); gather.py
reads every stage's outputs into the template's context, naming what is missing; render.py fills
the Jinja2 template and prints the PDF with Chromium."""
