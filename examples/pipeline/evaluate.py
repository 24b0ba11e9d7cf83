"""Score model.pt on data.parquet; metrics.json is this step's result."""

import json

with open("model.pt") as f:
    model = json.load(f)
errors = []
with open("data.parquet") as f:
    next(f)
    for line in f:
        x, y = map(float, line.split(","))
        errors.append((model["a"] * x + model["b"] - y) ** 2)
mse = sum(errors) / len(errors)
with open("metrics.json", "w") as out:
    json.dump({"mse": round(mse, 6), "good": mse < 0.001}, out)
print(f"mse={mse:.6f}")
