def test_superseded_by_a_newer_request_that_ran() -> None:
    from chalicelib.domain.decisions import superseded_by

    ran = [("2026-11-28T09:00:05+00:00", "b"), ("2026-11-28T09:00:01+00:00", "a")]
    assert superseded_by("2026-11-28T09:00:03+00:00", "c", ran) == "b"
    assert superseded_by("2026-11-28T09:00:09+00:00", "c", ran) is None
    assert superseded_by("2026-11-28T09:00:05+00:00", "b", ran) is None  # itself
    assert superseded_by("2026-11-28T09:00:05+00:00", "a", ran) is None  # the same second: not older
    assert superseded_by("", "c", ran) is None and superseded_by("2026-11-28T09:00:03+00:00", "c", [("", "x")]) is None


def _promotion(deploys: tuple = ()) -> object:
    from chalicelib.domain.model import Promotion, Request

    request = Request(id="p-1", tenant="xy-0146", environment="qa", version="20261127200000")
    return Promotion(request, deploys)


def test_a_stack_event_is_attributed_only_by_token_or_recorded_stack_id() -> None:
    from chalicelib.domain.decisions import Attribution, attribute_stack_event
    from chalicelib.domain.model import DeployEntry

    fresh = _promotion()
    assert attribute_stack_event(fresh, stack_id="arn:old", token="p-1") is Attribution.OURS
    assert attribute_stack_event(fresh, stack_id="arn:old", token="p-0") is Attribution.NOT_OURS
    # No token, nothing recorded: the stack's name is no evidence; the tags must decide.
    assert attribute_stack_event(fresh, stack_id="arn:old", token="") is Attribution.UNKNOWN
    deploying = _promotion((DeployEntry(n=1, at="", awaiting=True, stack_id="arn:mine"),))
    assert attribute_stack_event(deploying, stack_id="arn:mine", token=None) is Attribution.OURS
    assert attribute_stack_event(deploying, stack_id="arn:old", token=None) is Attribution.NOT_OURS
    # After a quota refusal the restore is retried with a new token; both are this promotion's.
    assert attribute_stack_event(fresh, stack_id=None, token="p-1-r1") is Attribution.OURS
    assert attribute_stack_event(fresh, stack_id=None, token="p-1-1") is Attribution.NOT_OURS


def test_tags_decide_when_the_event_carries_no_evidence() -> None:
    from chalicelib.domain.decisions import Attribution, attribute_by_tags

    promotion = _promotion()
    assert attribute_by_tags(promotion, {"tierlift:promotion": "p-1"}) is Attribution.OURS
    assert attribute_by_tags(promotion, {"tierlift:promotion": "p-0"}) is Attribution.NOT_OURS
    assert attribute_by_tags(promotion, None) is Attribution.NOT_OURS
