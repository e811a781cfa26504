"""Strict rules for EC2's own listings (loaded by strict.py, so on in every AWS test).

S12. DescribeInstances and DescribeImages page as EC2 pages them (EC2 API reference,
    DescribeInstances and DescribeImages, MaxResults and NextToken; "Pagination" in the EC2 API
    reference and the EC2 developer guide: a call with MaxResults returns at most that many items
    and a NextToken until the last page, which has none; a caller keeps calling until the
    token is null, and pages may hold fewer items than asked). moto pages DescribeInstances by
    reservation with a default of 100 even when no MaxResults is given (EC2 then answers with
    everything), and never pages DescribeImages. Here, without ids:
    - no MaxResults: every item, one answer;
    - MaxResults: DescribeInstances 5-1000 ("You cannot specify this parameter and the instance
      IDs parameter in the same request", which moto already refuses), DescribeImages 1-1000,
      else InvalidParameterValue; pages of at most MaxResults items counted in instances (a
      reservation may be split over pages), short at random, about one in seven empty, each
      with a new opaque NextToken until the end; a token the server never gave is
      InvalidParameterValue.
    Each page served to pv2hvm is logged as "page describe-instances N of TOTAL" (or
    describe-images).
"""

import copy
import threading

from moto.core import responses as core_responses
from moto.ec2.exceptions import EC2ClientError

import strict

_given = set()
_lock = threading.Lock()


def _max_results(self, low):
    raw = self._get_param("MaxResults")
    if raw is None:
        return None
    n = int(raw)
    if not low <= n <= 1000:
        raise EC2ClientError("InvalidParameterValue",
                             f"Value ( {n} ) for parameter maxResults is invalid. Expecting a value between {low} and 1000.")
    return n


def _page(items, token, limit):
    """One page of `items` after `token`: at most `limit`, often fewer, sometimes none."""
    start = 0
    if token:
        with _lock:
            known = token in _given
        if not known:
            raise EC2ClientError("InvalidParameterValue", f"Invalid value '{token}' for nextToken")
        start = int(token.split(".")[0])
    with strict._lock:
        n = 0 if strict._rng.random() < 0.15 else strict._rng.randint(1, min(limit, 150))
        salt = strict._rng.getrandbits(48)
    end = min(start + n, len(items))
    if end >= len(items):
        return items[start:end], None
    nxt = f"{end}.{salt:012x}"
    with _lock:
        _given.add(nxt)
    return items[start:end], nxt


INST = strict.INST
AMIS = strict.AMIS
_strict_describe_instances = INST.describe_instances
_strict_describe_images = AMIS.describe_images


def _describe_instances(self):
    if self._get_param("InstanceIds", []):
        return _strict_describe_instances(self)
    strict._tick()
    strict._random_fault("DescribeInstances", ec2=True)
    limit = _max_results(self, 5)
    reservations = self.ec2_backend.describe_instances(filters=self._filters_from_querystring())
    items = [(r, i) for r in reservations for i in r.instances]
    page, nxt = (items, None) if limit is None else _page(items, self._get_param("NextToken"), limit)
    out = []
    for r, i in page:
        if not out or out[-1].id != r.id:
            part = copy.copy(r)
            part.instances = []
            out.append(part)
        out[-1].instances.append(i)
    if strict._is_pv2hvm():
        strict._note(f"page describe-instances {len(page)} of {len(items)}")
    return core_responses.ActionResult({"Reservations": out, "NextToken": nxt})


def _describe_images(self):
    if self._get_param("ImageIds", []):
        return _strict_describe_images(self)
    strict._tick()
    strict._random_fault("DescribeImages", ec2=True)
    limit = _max_results(self, 1)
    images = self.ec2_backend.describe_images(
        filters=self._filters_from_querystring(), exec_users=self._get_param("ExecutableUsers", []),
        owners=self._get_param("Owners", []))
    page, nxt = (images, None) if limit is None else _page(images, self._get_param("NextToken"), limit)
    if strict._is_pv2hvm():
        strict._note(f"page describe-images {len(page)} of {len(images)}")
    result = {"Images": page}
    if nxt:
        result["NextToken"] = nxt
    return core_responses.ActionResult(result)


INST.describe_instances = _describe_instances
AMIS.describe_images = _describe_images
