"""Prepare the data: a CSV table (the 'parquet' the seed's pipeline passes on) of
y = 3x + 1 with a little noise, its row count, and stats.json for later steps' branches."""

import json
import random
import sys

rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
random.seed(7)
with open("processed.parquet", "w") as out:
    out.write("x,y\n")
    for i in range(rows):
        x = i / rows
        out.write(f"{x:.6f},{3 * x + 1 + random.uniform(-0.01, 0.01):.6f}\n")
with open("stats.json", "w") as out:
    json.dump({"rows": rows}, out)
print(rows)
