"""The reference: pymayfly's FileAuditLedger (PyPI) appending the records
ledger_bench appends, from WRITERS threads, without fsync (as it writes).

usage: pymayfly_ledger.py WRITERS APPENDS_EACH DIR   (last line: JSON)
"""

import json
import os
import sys
import threading
import time

from pymayfly import FileAuditLedger
from pymayfly.core.provenance import ProvenanceRecord

writers, each, directory = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
path = os.path.join(directory, f"pymayfly-ledger-bench-{os.getpid()}.jsonl")
ledger = FileAuditLedger(path)


def writer(w: int) -> None:
    for i in range(each):
        ledger.open_transaction(ProvenanceRecord(
            transaction_id=f"{w:04}-{i:06}", resource="arn:aws:s3:::bucket/key",
            action="read", issued_at=int(time.time()),
            blast_radius="spiffe://example.org/orders"))


start = time.perf_counter()
threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
secs = time.perf_counter() - start
total = writers * each
os.remove(path)
print(json.dumps({"writers": writers, "appends": total, "per_s": round(total / secs)}))
