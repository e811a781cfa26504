"""IAM as AWS enforces it, for the policy test: loaded by server.py, inert until turned on.

moto checks each request's SigV4 signature and the caller's IAM policies once its request
count passes INITIAL_NO_AUTH_ACTION_COUNT (set at run time with POST /moto-api/reset-auth,
`tool.py auth on`). Two gaps stand between that and AWS:

I1. Signatures are checked over the bytes the client sent (AWS General Reference, "Signature
    Version 4 signing process": the canonical request hashes the payload as sent). moto
    re-encodes a form-encoded body from its parsed fields, so a signed EC2 query body holding a
    space or a reserved character (every pv2hvm description and tag) fails its check. The raw
    body is kept as it arrived and the check reads it.
    A request with no form body (a GET of the EBS direct APIs) hashes the empty payload, not
    its query string.
I2. A denial is in each API's own error format and names the action (IAM user guide,
    "Troubleshoot access denied error messages": "User: ARN is not authorized to perform:
    ACTION"): EC2 answers UnauthorizedOperation (EC2 API reference, "Error codes"), the EBS
    direct APIs an AccessDeniedException in JSON (EBS API reference, "Common errors"), where
    moto answers both in the XML of its generic AccessDenied, which the EBS client cannot read.
With PV2HVM_MOTO_IAM_LOG set, every action allowed is written to that file.

I3. Tags given at creation need ec2:CreateTags too (EC2 user guide, "Grant permission to tag
    Amazon EC2 resources during creation"): an EC2 call with TagSpecifications is checked for
    its own action and for ec2:CreateTags.
"""

import io
import os
import threading

from flask import has_request_context, request as flask_request
from moto.core import authorization
from moto.core.exceptions import JsonRESTError, _RESTError
from moto.iam import access_control
from moto.iam.access_control import IAMRequest
from moto.moto_server import werkzeug_app

_log_path = os.environ.get("PV2HVM_MOTO_IAM_LOG")
_log_lock = threading.Lock()


def _log(action):
    """Each action a request was allowed, one a line, for the test that the policy is exact."""
    if _log_path:
        with _log_lock, open(_log_path, "a") as f:
            f.write(action + "\n")


_orig_call = werkzeug_app.DomainDispatcherApplication.__call__


def _call(self, environ, start_response):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > 0 and environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["pv2hvm.raw_body"] = body
    return _orig_call(self, environ, start_response)


werkzeug_app.DomainDispatcherApplication.__call__ = _call

_orig_auth = authorization.ActionAuthenticatorMixin._authenticate_and_authorize_action


def _auth(self, iam_request_cls, resource="*"):
    raw = flask_request.environ.get("pv2hvm.raw_body") if has_request_context() else None
    if raw and not getattr(self, "raw_body", None):
        kept = getattr(self, "raw_body", None)
        self.raw_body = raw
        try:
            return _orig_auth(self, iam_request_cls, resource)
        finally:
            self.raw_body = kept
    return _orig_auth(self, iam_request_cls, resource)


authorization.ActionAuthenticatorMixin._authenticate_and_authorize_action = _auth


_orig_aws_request = access_control.IAMRequestBase._create_aws_request


def _aws_request(self):
    req = _orig_aws_request(self)
    if isinstance(self._body, bytes):
        req.data = self._body
    return req


access_control.IAMRequestBase._create_aws_request = _aws_request


class _Ec2Denied(_RESTError):
    code = 403


class _EbsError(JsonRESTError):
    code = 403


def _denied(self):
    who = self._access_key.arn
    if self._service == "ec2":
        raise _Ec2Denied("UnauthorizedOperation", "You are not authorized to perform this operation. "
                         f"User: {who} is not authorized to perform: {self._action}")
    if self._service == "ebs":
        raise _EbsError("AccessDeniedException", f"User: {who} is not authorized to perform: {self._action}")
    return _orig_denied(self)


def _bad_signature(self):
    if self._service == "ebs":
        raise _EbsError("SignatureDoesNotMatch", "The request signature we calculated does not match the signature "
                        "you provided.")
    return _orig_bad_signature(self)


def _permitted(self, resource):
    _orig_permitted(self, resource)
    _log(self._action)
    if self._service == "ec2" and any(k.startswith("TagSpecification.") for k in (self._data or {})):
        action, self._action = self._action, "ec2:CreateTags"
        try:
            _orig_permitted(self, resource)
            _log(self._action)
        finally:
            self._action = action


_orig_permitted = IAMRequest.check_action_permitted
IAMRequest.check_action_permitted = _permitted
_orig_denied = IAMRequest._raise_access_denied
_orig_bad_signature = IAMRequest._raise_signature_does_not_match
IAMRequest._raise_access_denied = _denied
IAMRequest._raise_signature_does_not_match = _bad_signature
