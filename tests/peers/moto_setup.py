"""Sets up a moto server for ephemera's STS tests with real IAM checks:
a role whose trust policy admits one user, that user allowed only
sts:AssumeRole on the role, and an access key for it.

usage: moto_setup.py ENDPOINT   (run with the server's first 4 requests unauthenticated)
prints JSON: {"access_key_id", "secret_access_key", "role_arn"}
"""

import json
import sys

import boto3

endpoint = sys.argv[1]
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
account = "123456789012"
trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
         "Principal": {"AWS": f"arn:aws:iam::{account}:user/ephemera-shim"}, "Action": "sts:AssumeRole"}]}
role = iam.create_role(RoleName="ephemera-objects", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
iam.create_user(UserName="ephemera-shim")
iam.put_user_policy(UserName="ephemera-shim", PolicyName="assume", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role}]}))
key = iam.create_access_key(UserName="ephemera-shim")["AccessKey"]
print(json.dumps({"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"], "role_arn": role}))
