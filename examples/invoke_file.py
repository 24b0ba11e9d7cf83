"""Run a function from a file that knows nothing of sandrun.

python examples/invoke_file.py
"""

from pathlib import Path

import sandrun

here = Path(__file__).parent
result = sandrun.invoke(
    here / "train.py", "train_model", args=[10], kwargs={"learning_rate": 0.1}, cpus=1
)
print("result:", result)
