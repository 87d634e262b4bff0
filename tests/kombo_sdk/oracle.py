"""Kombo's official Python SDK (PyPI `kombo`, generated from Kombo's OpenAPI
document; pinned in requirements.txt) as an oracle for the Kombo simulator
and for the requests the operator sends. Run by tests/integration/providers/kombo_sdk.rs:

    oracle.py <case.json>

case.json (written by the Rust test):
  base_url, api_key        the simulator (127.0.0.1 only)
  integration_id           an integration the SDK may read
  deletable_id             an integration the SDK deletes
  activation_token         what Kombo Connect returned for a finished link
  link_token               that link's own `token` parameter
  operator_requests        every request the operator sent, as the simulator
                           recorded them: {route, method, path, body}
  crd_enums                {integrationTool, integrationCategory, linkType}:
                           the values the CRD accepts
  webhooks                 {secret, deliveries: [{body, signature}]}: the
                           webhook events the simulator sends, byte for byte

Prints one line per check; exits 1 on the first disagreement, naming it.
Every SDK call goes through an httpx client that ignores proxy settings, to
the simulator only.
"""

import base64
import hashlib
import hmac
import json
import sys
import typing

import httpx
from kombo import Kombo, errors, models
from kombo.models import postconnectcreatelinkrequestbody as create_link_body


def fail(what):
    print(f"DISAGREE: {what}")
    sys.exit(1)


def ok(what):
    print(f"ok: {what}")


def literal_values(t):
    return set(typing.get_args(t))


def main():
    case = json.load(open(sys.argv[1]))
    base = case["base_url"]
    if not base.startswith("http://127.0.0.1:"):
        fail(f"refusing a non-local base URL {base}")
    http = httpx.Client(trust_env=False)
    sdk = Kombo(api_key=case["api_key"], server_url=base, client=http)

    # 1. The simulator's answers, parsed by the SDK's response models.
    r = sdk.general.check_api_key()
    ok(f"GET /check-api-key: environment_id={r.data.environment_id}")

    for link_type in ["MAGIC_LINK", "EMBEDDED"]:
        r = sdk.connect.create_connection_link(
            end_user_email="it-admin@acme.example",
            end_user_organization_name="ACME Inc.",
            end_user_origin_id="oracle-origin",
            integration_category="ATS",
            integration_tool="smartrecruiters",
            link_type=link_type,
        )
        if not r.data.link.startswith("https://"):
            fail(f"create-link answered a link that is not https: {r.data.link}")
        ok(f"POST /connect/create-link ({link_type})")

    r = sdk.connect.get_integration_by_token(token=case["activation_token"])
    if r.data.id != case["integration_id"]:
        fail(f"integration-by-token resolved {r.data.id}, not {case['integration_id']}")
    ok("GET /connect/integration-by-token/{activation token}")
    try:
        sdk.connect.get_integration_by_token(token=case["link_token"])
        fail("integration-by-token accepted the link's own token")
    except errors.KomboGeneralError as e:
        ok(f"GET /connect/integration-by-token/{{link token}}: {e.data.error.code}")

    r = sdk.general.get_integration_details(integration_id=case["integration_id"])
    if r.data.tool.id != "smartrecruiters":
        fail(f"tool.id is {r.data.tool.id}")
    ok(f"GET /integrations/{{id}}: tool={r.data.tool.id} status={r.data.status} origin={r.data.end_user.origin_id}")

    try:
        sdk.general.get_integration_details(integration_id="personio:doesnotexist")
        fail("an unknown integration was found")
    except errors.KomboGeneralError as e:
        if e.data.error.code != "PLATFORM.INTEGRATION_NOT_FOUND" or e.raw_response.status_code != 404:
            fail(f"unknown integration: {e.raw_response.status_code} {e.data.error.code}")
        ok("GET /integrations/{unknown}: 404 PLATFORM.INTEGRATION_NOT_FOUND")

    sdk.general.delete_integration(integration_id=case["deletable_id"], body={})
    ok("DELETE /integrations/{id}")
    try:
        sdk.general.delete_integration(integration_id=case["deletable_id"], body={})
        fail("a deleted integration was deleted again")
    except errors.KomboGeneralError as e:
        ok(f"DELETE /integrations/{{deleted}}: {e.data.error.code}")

    bad = Kombo(api_key="not-a-key", server_url=base, client=http)
    try:
        bad.general.check_api_key()
        fail("an unknown API key was accepted")
    except errors.KomboGeneralError as e:
        if e.data.error.code != "PLATFORM.AUTHENTICATION_INVALID":
            fail(f"unknown API key: {e.data.error.code}")
        ok("GET /check-api-key with an unknown key: PLATFORM.AUTHENTICATION_INVALID")

    # 2. The operator's requests, against the SDK's request models.
    paths = {
        "check-api-key": ("GET", "/check-api-key", None),
        "create-link": ("POST", "/connect/create-link", models.PostConnectCreateLinkRequestBody),
        "get-integration": ("GET", "/integrations/", None),
        "delete-integration": ("DELETE", "/integrations/", models.DeleteIntegrationsIntegrationIDRequestBody),
    }
    seen = set()
    for req in case["operator_requests"]:
        route = req["route"]
        if route not in paths:
            fail(f"the operator called {req['method']} {req['path']}, an endpoint it is not known to use")
        method, prefix, model = paths[route]
        if req["method"] != method or not req["path"].startswith(prefix):
            fail(f"{route}: {req['method']} {req['path']}")
        if model is not None:
            body = req["body"]
            if not isinstance(body, dict):
                fail(f"{route}: the body is not a JSON object: {body!r}")
            known = {f.alias or n for n, f in model.model_fields.items()}
            unknown = set(body) - known
            if unknown:
                fail(f"{route}: fields the SDK does not know: {sorted(unknown)}")
            try:
                model.model_validate(body, strict=True)
            except Exception as e:  # pydantic.ValidationError
                fail(f"{route}: body {body} does not validate: {e}")
        seen.add(route)
        ok(f"operator {req['method']} {req['path']}" + (f" {json.dumps(req['body'], sort_keys=True)}" if model else ""))
    for route in paths:
        if route not in seen:
            fail(f"the operator never called {route}: nothing checked it")

    # 3. The CRD's enumerations are exactly Kombo's.
    enums = case["crd_enums"]
    for field, sdk_type in [
        ("integrationTool", create_link_body.IntegrationTool),
        ("integrationCategory", create_link_body.PostConnectCreateLinkRequestBodyIntegrationCategory),
        ("linkType", create_link_body.PostConnectCreateLinkRequestBodyLinkType),
    ]:
        crd, kombo = set(enums[field]), literal_values(sdk_type)
        if crd != kombo:
            fail(f"{field}: CRD only {sorted(crd - kombo)}, SDK only {sorted(kombo - crd)}")
        ok(f"CRD {field}: the SDK's {len(kombo)} values")

    # 4. The simulator's webhook deliveries: each body parses with the
    # SDK's webhook model of its type (no field the model lacks), the
    # request model accepts it with its X-Kombo-Signature header, and the
    # signature is what Kombo documents (HMAC-SHA256 of the raw body,
    # base64url without padding), computed here with Python's hmac.
    webhook_models = {
        "integration-created": (models.IntegrationCreatedWebhookPayload,
                                models.WebhookIntegrationCreatedWebhookPayloadRequest),
        "integration-deleted": (models.IntegrationDeletedWebhookPayload,
                                models.WebhookIntegrationDeletedWebhookPayloadRequest),
        "integration-state-changed": (models.IntegrationStateChangedWebhookPayload,
                                      models.WebhookIntegrationStateChangedWebhookPayloadRequest),
    }
    secret = case["webhooks"]["secret"].encode()
    seen_types = set()
    for d in case["webhooks"]["deliveries"]:
        body = d["body"].encode()
        event = json.loads(body)
        kind = event.get("type")
        if kind not in webhook_models:
            fail(f"webhook of unexpected type {kind!r}")
        payload_model, request_model = webhook_models[kind]
        try:
            payload = payload_model.model_validate_json(body)
        except Exception as e:  # pydantic.ValidationError
            fail(f"{kind}: the body does not validate: {e}")

        def unknown_fields(model_cls, value, where):
            known = {f.alias or n for n, f in model_cls.model_fields.items()}
            extra = set(value) - known
            if extra:
                fail(f"{kind}: {where} has fields the SDK does not know: {sorted(extra)}")
            for n, f in model_cls.model_fields.items():
                sub = value.get(f.alias or n)
                ann = f.annotation
                for t in (ann, *typing.get_args(ann)):
                    if isinstance(t, type) and hasattr(t, "model_fields") and isinstance(sub, dict):
                        unknown_fields(t, sub, f"{where}.{f.alias or n}")

        unknown_fields(payload_model, event, "the event")
        try:
            request_model.model_validate({"X-Kombo-Signature": d["signature"], "body": payload})
        except Exception as e:
            fail(f"{kind}: the request model refuses it: {e}")
        expected = base64.urlsafe_b64encode(hmac.new(secret, body, hashlib.sha256).digest()).rstrip(b"=").decode()
        if not hmac.compare_digest(expected, d["signature"]):
            fail(f"{kind}: X-Kombo-Signature is not HMAC-SHA256/base64url of the body")
        seen_types.add(kind)
        ok(f"webhook {kind}: parsed by {payload_model.__name__}, signature verified")
    for kind in webhook_models:
        if kind not in seen_types:
            fail(f"no {kind} webhook was checked")
    print("the SDK agrees")


if __name__ == "__main__":
    main()
