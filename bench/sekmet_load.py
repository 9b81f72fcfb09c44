#!/usr/bin/env python3
"""Load FHIR NDJSON files into a sekmet-fhir SQLite database with sekmet's own Store and
indexer, so `sekmet serve` can answer searches over the same data EMRGym serves.

    python3 bench/sekmet_load.py DB_PATH NDJSON_DIR

Used by `emrgym bench --sekmet`; prints one JSON line: {"resources": N, "seconds": S}.
"""
import json
import sys
import time
from pathlib import Path

from sekmet.fhir.store import Store


def main(db, data_dir):
    t0 = time.time()
    Path(db).unlink(missing_ok=True)
    store = Store(db)
    n = 0
    files = sorted(Path(data_dir).glob("*.ndjson"), key=lambda p: (p.name != "Patient.ndjson", p.name))
    for f in files:
        batch = []
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    batch.append(json.loads(line))
                if len(batch) >= 5000:
                    with store.transaction():
                        for r in batch:
                            store.create(r, keep_id=True)
                    n += len(batch)
                    batch = []
        if batch:
            with store.transaction():
                for r in batch:
                    store.create(r, keep_id=True)
            n += len(batch)
    print(json.dumps({"resources": n, "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
