"""Submit a job spec written in YAML.

python examples/yaml_job.py
"""

from pathlib import Path

import sandrun
from sandrun.spec import load_spec_file

spec = load_spec_file(Path(__file__).parent / "job.yaml")  # refuses unknown fields
job = sandrun.connect().submit(spec)
print(job.wait().log_text().strip())
