import json
import os
import subprocess
import sys

import keras

import keras_segattn.models  # noqa: F401  (registers the model classes for load_model)

SCRIPT = os.path.join(os.path.dirname(__file__), "resume_script.py")


def run(out_dir, *args):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, SCRIPT, out_dir, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_killed_run_resumes_from_last_checkpoint(tmp_path):
    out_dir = str(tmp_path / "run")
    killed = run(out_dir, 5)  # dies during the 3rd interval, after step 5
    assert killed.returncode == 3, killed.stderr[-3000:]
    index = json.load(open(os.path.join(out_dir, "checkpoints", "checkpoints.json")))
    assert [e["step"] for e in index] == [2, 4]
    assert os.path.exists(os.path.join(out_dir, "checkpoints", "ckpt-0000004.keras"))
    assert not any(f.startswith(".tmp-") for f in os.listdir(os.path.join(out_dir, "checkpoints")))
    assert json.load(open(os.path.join(out_dir, "config.json")))["steps"] == 6

    resumed = run(out_dir)  # the same command again
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["epochs_run"] == [2]  # only the interrupted interval is re-run
    assert result["iterations"] == 6  # same total step count as an uninterrupted run
    index = json.load(open(os.path.join(out_dir, "checkpoints", "checkpoints.json")))
    assert [e["step"] for e in index] == [2, 4, 6]
    assert "val_mIoU" in index[-1]["logs"]
    loaded = keras.saving.load_model(os.path.join(out_dir, "model.keras"))
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 6
