"""One shard of a fan-out: its result is the shard's number squared."""

import json
import sys

shard = int(sys.argv[1])
with open("shard.json", "w") as out:
    json.dump({"shard": shard, "value": shard * shard}, out)
print(f"shard {shard}")
