#!/usr/bin/env python3
"""An S3-compatible server on loopback for the log archive's tests.

Runs moto's S3 (installed by hack/setup-s3.sh) with signature checking on:
every request must be signed (AWS SigV4) with the one access key given
here, as a real S3 or MinIO would demand. Objects live in memory and go
with the process. The buckets named are made at start. Prints "ready PORT"
once it accepts connections.

usage: s3-server.py PORT ACCESS_KEY_ID SECRET_ACCESS_KEY [BUCKET...]
"""
import json
import os
import sys

# moto reads this when it is imported: 0 requests go unauthenticated.
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"

from moto.core import DEFAULT_ACCOUNT_ID  # noqa: E402
from moto.iam.models import iam_backends  # noqa: E402
from moto.moto_server.threaded_moto_server import ThreadedMotoServer  # noqa: E402
from moto.s3.models import s3_backends  # noqa: E402


def main():
    port, key_id, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_user("us-east-1", "tektite-tests")
    policy = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy("tektite-tests", "s3", json.dumps(policy))
    # moto makes random keys: give the user the one the tests sign with.
    key = iam.create_access_key("tektite-tests")
    del iam.access_keys[key.physical_resource_id]
    key.access_key_id, key.secret_access_key = key_id, secret
    iam.access_keys[key.physical_resource_id] = key
    for bucket in sys.argv[4:]:
        s3_backends[DEFAULT_ACCOUNT_ID]["aws"].create_bucket(bucket, "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(f"ready {port}", flush=True)
    server._thread.join()


if __name__ == "__main__":
    main()
