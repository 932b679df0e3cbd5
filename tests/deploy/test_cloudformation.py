"""The AWS parts as code (deploy/aws/healthcare.yaml): cfn-lint finds nothing, the bucket is private
and encrypted, and each role may do only what its workload needs (checked by evaluating the policies)."""

from __future__ import annotations

import fnmatch
import re
from functools import cache
from typing import Any

import pytest
from cfnlint.decode import decode

from devstack.paths import REPO, VENV_BIN
from tests.deploy.conftest import run

TEMPLATE = REPO / "deploy" / "aws" / "healthcare.yaml"
BUCKET_ARN = "arn:aws:s3:::healthcare-prod-invoices-123456789012"
STATE_ARN = "arn:aws:s3:::healthcare-prod-flink-state-123456789012"
KEY_ARN = "arn:aws:kms:eu-central-1:123456789012:key/data"
FUNCTION_ARN = "arn:aws:lambda:eu-central-1:123456789012:function:healthcare-prod-invoice-pdf"
LOG_GROUP_ARN = "arn:aws:logs:eu-central-1:123456789012:log-group:/aws/lambda/healthcare-prod-invoice-pdf"


@cache
def template() -> dict[str, Any]:
    tpl, errors = decode(str(TEMPLATE))
    assert not errors, errors
    assert tpl is not None
    return dict(tpl)


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template()["Resources"].items() if r["Type"] == kind}


def resolve(value: Any) -> Any:
    """Intrinsic functions resolved for a stack named prod in account 123456789012."""
    known = {
        "InvoiceBucket.Arn": BUCKET_ARN,
        "AnalyticsStateBucket.Arn": STATE_ARN,
        "DataKey.Arn": KEY_ARN,
        "InvoicePdfFunction.Arn": FUNCTION_ARN,
        "InvoicePdfLogGroup.Arn": LOG_GROUP_ARN,
        "PatientTable.Arn": "arn:aws:dynamodb:eu-central-1:123456789012:table/healthcare-prod-patients",
        "InvoicePrefix": template()["Parameters"]["InvoicePrefix"]["Default"],
        "AWS::Region": "eu-central-1",
        "AWS::AccountId": "123456789012",
        "AWS::Partition": "aws",
        "Environment": "prod",
    }
    if isinstance(value, list):
        return [resolve(v) for v in value]
    if isinstance(value, dict) and len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Fn::GetAtt":
            return known[".".join(arg) if isinstance(arg, list) else arg]
        if fn == "Ref":
            return known[arg]
        if fn == "Fn::Sub":
            return re.sub(r"\$\{([^}]+)\}", lambda m: known[m.group(1)], arg)
    return value


def statements(role: str) -> list[dict[str, Any]]:
    """Every statement granted to a role: its inline policies and the RolePolicies naming it."""
    found = []
    for policy in template()["Resources"][role]["Properties"].get("Policies", []):
        found += policy["PolicyDocument"]["Statement"]
    for rp in resources("AWS::IAM::RolePolicy").values():
        if rp["Properties"]["RoleName"] == {"Ref": role}:
            found += rp["Properties"]["PolicyDocument"]["Statement"]
    for mp in resources("AWS::IAM::ManagedPolicy").values():
        if {"Ref": role} in mp["Properties"].get("Roles", []):
            found += mp["Properties"]["PolicyDocument"]["Statement"]
    return found


def allowed(role: str, action: str, resource: str) -> bool:
    """IAM's rule for identity policies: some Allow matches and no Deny does (wildcards as IAM's)."""

    def matches(stmt: dict[str, Any]) -> bool:
        actions = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
        res = resolve(stmt["Resource"])
        res = res if isinstance(res, list) else [res]
        return any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions) and any(
            fnmatch.fnmatchcase(resource, r) for r in res
        )

    stmts = statements(role)
    return any(s["Effect"] == "Allow" and matches(s) for s in stmts) and not any(
        s["Effect"] == "Deny" and matches(s) for s in stmts
    )


def test_cfn_lint_finds_nothing_not_even_informational() -> None:
    proc = run(
        [str(VENV_BIN / "cfn-lint"), "--include-checks", "I", "--", str(TEMPLATE)], check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def test_cfn_lint_would_report_a_broken_template(tmp_path: Any) -> None:
    """The linter is really reading the template: a wrong property type is an error."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace("RetentionInDays: 90", "RetentionInDays: ninety"))
    proc = run([str(VENV_BIN / "cfn-lint"), "--", str(broken)], check=False, timeout=300)
    assert proc.returncode != 0 and "E3012" in proc.stdout  # wrong type


@pytest.mark.parametrize("bucket", ["InvoiceBucket", "AnalyticsStateBucket"])
def test_buckets_are_private_encrypted_and_age_out(bucket: str) -> None:
    props = template()["Resources"][bucket]["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]  # no ACLs
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert resolve(rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]) == KEY_ARN
    rules = props["LifecycleConfiguration"]["Rules"]
    assert all(r["Status"] == "Enabled" for r in rules)
    assert any("ExpirationInDays" in r for r in rules)
    assert any("AbortIncompleteMultipartUpload" in r for r in rules)
    assert template()["Resources"][bucket]["DeletionPolicy"] == "Retain"


def test_invoice_lifecycle_keeps_pdfs_for_the_retention_period() -> None:
    (rule,) = [
        r
        for r in template()["Resources"]["InvoiceBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
        if r["Id"] == "invoices-age-out"
    ]
    assert resolve(rule["Prefix"]) == "invoices/"
    assert rule["ExpirationInDays"] == {"Ref": "InvoiceRetentionDays"}
    assert template()["Parameters"]["InvoiceRetentionDays"]["MinValue"] >= 365
    assert (
        template()["Resources"]["InvoiceBucket"]["Properties"]["VersioningConfiguration"]["Status"]
        == "Enabled"
    )


@pytest.mark.parametrize("policy", ["InvoiceBucketPolicy", "AnalyticsStateBucketPolicy"])
def test_bucket_policies_grant_nobody_and_refuse_plain_http(policy: str) -> None:
    stmts = template()["Resources"][policy]["Properties"]["PolicyDocument"]["Statement"]
    assert all(s["Effect"] == "Deny" for s in stmts), "a bucket policy that allows is a way in"
    tls = [s for s in stmts if s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"]
    assert tls and tls[0]["Action"] == "s3:*"


def test_the_lambda_role_can_write_only_its_prefix() -> None:
    role = "InvoicePdfRole"
    assert allowed(role, "s3:PutObject", f"{BUCKET_ARN}/invoices/0b9c6b52.pdf")
    # nothing outside the prefix, in another bucket, or any other S3 verb
    assert not allowed(role, "s3:PutObject", f"{BUCKET_ARN}/other/x.pdf")
    assert not allowed(role, "s3:PutObject", f"{BUCKET_ARN}/invoices")
    assert not allowed(role, "s3:PutObject", f"{STATE_ARN}/invoices/x.pdf")
    for action in (
        "s3:GetObject",
        "s3:DeleteObject",
        "s3:ListBucket",
        "s3:PutObjectAcl",
        "s3:PutBucketPolicy",
    ):
        assert not allowed(role, action, f"{BUCKET_ARN}/invoices/x.pdf"), action
        assert not allowed(role, action, BUCKET_ARN), action
    assert allowed(role, "kms:GenerateDataKey", KEY_ARN)
    assert not allowed(role, "kms:Decrypt", KEY_ARN)
    # no wildcard grant at all
    for stmt in statements(role):
        actions = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
        assert all("*" not in a for a in actions), stmt
        assert resolve(stmt["Resource"]) != "*", stmt


def test_the_function_uses_that_role_and_encrypts_with_the_data_key() -> None:
    fn = template()["Resources"]["InvoicePdfFunction"]["Properties"]
    assert fn["Role"] == {"Fn::GetAtt": ["InvoicePdfRole", "Arn"]}
    assert fn["Runtime"] == "python3.11" and fn["Handler"] == "invoice_pdf.handler"
    env = fn["Environment"]["Variables"]
    assert env["INVOICE_SSE"] == "aws:kms" and resolve(env["INVOICE_KMS_KEY_ID"]) == KEY_ARN


def test_the_app_role_reads_invoices_and_invokes_the_function_but_writes_nothing() -> None:
    role = "AppRole"
    assert allowed(role, "s3:GetObject", f"{BUCKET_ARN}/invoices/x.pdf")  # presigned downloads
    assert allowed(role, "lambda:InvokeFunction", FUNCTION_ARN)
    assert not allowed(role, "s3:PutObject", f"{BUCKET_ARN}/invoices/x.pdf")
    assert not allowed(role, "s3:DeleteObject", f"{BUCKET_ARN}/invoices/x.pdf")
    assert not allowed(role, "s3:GetObject", f"{STATE_ARN}/checkpoints/x")


def test_the_analytics_role_stays_in_the_state_bucket() -> None:
    role = "AnalyticsRole"
    assert allowed(role, "s3:PutObject", f"{STATE_ARN}/checkpoints/job/chk-1/_metadata")
    assert not allowed(role, "s3:GetObject", f"{BUCKET_ARN}/invoices/x.pdf")
    assert not allowed(role, "lambda:InvokeFunction", FUNCTION_ARN)


def test_workload_roles_are_assumed_by_pod_identity_for_the_chart_service_accounts() -> None:
    res = template()["Resources"]
    for role, sa in (("AppRole", "AppServiceAccount"), ("AnalyticsRole", "FlinkServiceAccount")):
        (stmt,) = res[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert stmt["Principal"] == {"Service": "pods.eks.amazonaws.com"}
        (assoc,) = [
            r["Properties"]
            for r in resources("AWS::EKS::PodIdentityAssociation").values()
            if r["Properties"]["RoleArn"] == {"Fn::GetAtt": [role, "Arn"]}
        ]
        assert assoc["ServiceAccount"] == {"Ref": sa}
    assert template()["Parameters"]["FlinkServiceAccount"]["Default"] == "flink"


def test_database_is_private_encrypted_and_kept() -> None:
    db = template()["Resources"]["Database"]
    props = db["Properties"]
    assert props["StorageEncrypted"] is True and props["PubliclyAccessible"] is False
    assert props["ManageMasterUserPassword"] is True and "MasterUserPassword" not in props
    assert props["DeletionProtection"] is True and db["DeletionPolicy"] == "Snapshot"
    params = template()["Resources"]["DatabaseParameters"]["Properties"]["Parameters"]
    assert params["rds.force_ssl"] == "1"
    (ingress,) = template()["Resources"]["DatabaseSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert ingress["FromPort"] == ingress["ToPort"] == 5432 and "CidrIp" not in ingress


def test_patient_table_is_optional_encrypted_and_recoverable() -> None:
    table = template()["Resources"]["PatientTable"]
    assert table["Condition"] == "WithPatientTable"
    props = table["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
