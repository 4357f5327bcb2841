"""Stage `check`: validate params.yaml before any other stage runs.

Every other stage depends on its output, so DVC stops here on a bad value, before it deletes
the outputs of the stages that would rerun. The output never changes while the params are valid,
so this stage never makes another one rerun."""

from src import paths
from src.io import write_text
from src.models import build_checked, check_filter_layer, freeze_plan, model_section
from src.params import TEST_PER_CLASS_MAX, Params, check_index, checked_recipe, planned_train_images
from src.training.runtime import resolve_device
from stages._common import run_stage


def main(p: Params) -> None:
    model_section(p.model)  # the chosen model's section, checked against its own params class
    # the GPU recipe's model values too, on any machine: a typo shows before a GPU run needs it
    model_section(p.with_gpu_recipe().model, at="gpu.model")
    # the data may not exist yet: the count the stats stage will select, so a batch larger than the split
    # stops here (the train stage repeats the check on the real count); the recipe the train stage will
    # run here: the GPU one where gpu.use says so (always, or auto on CUDA)
    n_classes = len(p.data.class_names)
    run, _ = checked_recipe(p, resolve_device(p.train.device).type, n_train=planned_train_images(p))
    model = build_checked(run.model, n_classes)  # the model's own code runs here first: its mistakes in one line
    freeze_plan(model, run.train.freeze_at)
    check_filter_layer(model, p.visualize.deep_filter_layer, run.model.name)
    n_test = (p.data.test_per_class or TEST_PER_CLASS_MAX) * n_classes
    for key, index in (("theory.image_index", p.theory.image_index), ("report.image_index", p.report.image_index)):
        check_index(key, index, n_test, "test images")
    write_text(paths.PARAMS_OK, "params.yaml is valid\n")


if __name__ == "__main__":
    run_stage("check", main)
