"""Writing a run into its work dir: the skeleton every run writer shares.

    seed -> data -> files -> build -> fit -> record -> report -> promote

`train` (and `finetune`, a `train` that starts from a trained run's
weights), `meta_train` and `adapt --out` write a run the same way:

* `staged_run(files)` holds the work dir (`.lock`), finishes a promotion that
  a kill interrupted, and hands out the staging dir (`backup/`). The run
  writes everything there; when the block ends, the complete run's files
  replace the work dir's (`workdir.promote_staged`, one atomic rename each).
  A run that fails leaves the previous run's files as they were.
* `save_inputs` writes what the run was made from: config.yaml, vocab.txt
  and, for a preset, its tokenizer (tokenizer.json), so that the run is
  reopened (`run.load_run`) from the work dir alone.
* `save_results` writes what it made: model.keras, run.json and the test
  report.

The seed, the data (`prepare.prepare`), the network (`model.build_network`)
and the fitting are the writer's own.
"""

import contextlib
import shutil

from keras_mtl.disk import write_json, write_or_no_space
from keras_mtl.workdir import promote_staged, save_config, workdir_lock


@contextlib.contextmanager
def staged_run(files, keep_on_failure=False):
    """Write a run into `files.root` through its staging dir.

    Args:
        files: the work dir's `RunFiles`.
        keep_on_failure: leave the staging dir when the block fails (a killed
            or failed `train` resumes from it); else it is removed.

    Yields:
        The staging dir's `RunFiles` (`files.staged()`).

    Raises:
        WorkdirBusy: another process writes into the work dir.
    """
    with workdir_lock(files.root):
        promote_staged(files)  # a complete run killed while moving its files in place: finish that first
        try:
            yield files.staged()
        except BaseException:
            if not keep_on_failure:
                shutil.rmtree(files.backup, ignore_errors=True)  # the previous run's files were not touched
            raise
        files.complete_marker.write_text("", encoding="utf-8")
        promote_staged(files)


def save_inputs(stage, loaded, vocabulary, tokenizer_record=None):
    """config.yaml, vocab.txt and (a preset's) tokenizer.json in the staging dir.

    Returns:
        The `RunRecord` fields that say how to read them back (`tokenizer`).
    """
    from keras_mtl.data.tokenize import save_vocabulary  # lazy: TensorFlow (the CLI's start-up)

    stage.root.mkdir(parents=True, exist_ok=True)
    save_config(stage, loaded)
    save_vocabulary(vocabulary, stage.vocab)
    if tokenizer_record is not None:
        write_json(stage.tokenizer, tokenizer_record, compact=True)
    return {"tokenizer": stage.tokenizer.name if tokenizer_record is not None else None}


def save_results(stage, network, record, test, config, classes, pad_id, title, summary, **report_fields):
    """model.keras (the plain functional network), run.json and the test report in the staging dir.

    Returns:
        dict: the report (`report.json`).
    """
    from keras_mtl.evaluation import write_test_report  # lazy: TensorFlow

    write_or_no_space(stage.model, lambda: network.save(stage.model), "the trained model")
    record.write(stage.run)
    return write_test_report(stage, network, test, config, classes, pad_id, title, summary, **report_fields)
