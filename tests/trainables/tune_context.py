"""A stand-in for `ray.tune.get_context()` in a trial run without Ray: what the trainable asks of
it (its trial id, and its storage folder, where it looks for fold checkpoints to resume from)."""

import pyarrow.fs


def tune_context(trial_dir, trial_id: str = "t0"):
    storage = type("Storage", (), {"storage_filesystem": pyarrow.fs.LocalFileSystem(), "trial_fs_path": str(trial_dir)})
    return type("Ctx", (), {"get_trial_id": lambda self: trial_id, "get_storage": lambda self: storage})()
