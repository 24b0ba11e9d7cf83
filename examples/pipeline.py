"""The seed's ML pipeline from Python: prepare -> train -> evaluate if training completed,
and a heavy or a light branch on what preparing found.

    python examples/pipeline.py                  # this machine
    python examples/pipeline.py --gpus 2xa100    # a server whose agents have 2 A100s

Steps are wired by what they read: `prep.output(...)` as an input passes the file by
digest (the client never downloads it), `prep.result` is prep's stats.json.
"""

import argparse
from pathlib import Path

import sandrun

parser = argparse.ArgumentParser()
parser.add_argument("--gpus", default="0", help="what the training step asks for")
parser.add_argument("--rows", type=int, default=1000)
args = parser.parse_args()

here = Path(__file__).parent  # uploaded as each step's working directory
with sandrun.Pipeline("ml-py", params={"rows": args.rows, "big": 100_000}, code=here) as p:
    prep = p.step(
        "prep",
        "python3 pipeline/prep.py {{ params.rows }} > rows.txt",
        outputs=["processed.parquet", "rows.txt"],
        result="stats.json",
    )
    train = p.step(
        "train",
        ["python3", "pipeline/train.py", "--data", "data.parquet"],
        inputs={"data.parquet": prep.output("processed.parquet")},
        gpus=args.gpus,
        outputs=["model.pt"],
    )
    p.step(
        "evaluate",
        ["python3", "pipeline/evaluate.py"],
        needs=[train],
        when=f"{train.state} == 'completed'",
        inputs={
            "model.pt": train.output("model.pt"),
            "data.parquet": prep.output("processed.parquet"),
        },
        result="metrics.json",
    )
    rows = f"{prep.ref}.result.rows"  # steps.prep.result.rows
    p.step("heavy", "echo heavy: {{ steps.prep.result.rows }} rows", when=f"{rows} > params.big")
    p.step("light", "echo light: {{ steps.prep.result.rows }} rows", when=f"{rows} <= params.big")

run = p.run
assert run is not None
print("run", run.id)
run.wait(timeout=300)
status = run.status()
print("state:", status.state)
for name, step in status.steps.items():
    print(f"  {name}: {step.state}")
print("metrics:", status.steps["evaluate"].result)
print("train log:", run.job("train").log_text().strip().splitlines()[0])
