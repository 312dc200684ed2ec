"""Run a long job inside an ebb replica without being chosen for scale-in.

ebb gives every replica EBB_ADMIN_URL, EBB_REPLICA_ID and EBB_REPLICA_TOKEN;
the token lets this replica protect itself and nothing else.

    from protect import protected
    with protected():
        scrape_everything()
"""

import contextlib
import json
import os
import urllib.request


def _set_protection(on: bool) -> None:
    url = f"{os.environ['EBB_ADMIN_URL']}/api/v1/replicas/{os.environ['EBB_REPLICA_ID']}/protect"
    request = urllib.request.Request(
        url,
        data=json.dumps({"protected": on}).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {os.environ['EBB_REPLICA_TOKEN']}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


@contextlib.contextmanager
def protected():
    """Protects this replica for the duration of the block, and always releases."""
    _set_protection(True)
    try:
        yield
    finally:
        _set_protection(False)


if __name__ == "__main__":
    import sys
    import subprocess

    with protected():
        sys.exit(subprocess.call(sys.argv[1:]))
