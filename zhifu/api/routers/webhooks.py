"""Partners' webhooks: subscriptions, the delivery log, replays and test events.

Every endpoint takes a signed partner request (``CurrentPartner``) and acts
only on the calling key's subscriptions and deliveries: another key's answer
404, exactly like ones that do not exist. The use cases are
:mod:`zhifu.webhooks.service`'s; how a recipient checks a webhook is in
docs/payments.md ("Webhooks").
"""

from __future__ import annotations

import uuid
from typing import Annotated, Final

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from zhifu.api.auth import AuditCtx, CurrentPartner
from zhifu.api.deps import RuntimeDep
from zhifu.api.pagination import PAGE_RESPONSES, PageQuery, by_id
from zhifu.api.problems import problem_responses, register_error_mapping
from zhifu.webhooks import errors as webhook_errors
from zhifu.webhooks.model import (
    DELIVERIES_PAGE_DEFAULT,
    DELIVERIES_PAGE_MAX,
    EVENT_TYPE_CHARS_MAX,
    EVENT_TYPES_PER_SUBSCRIPTION_MAX,
    URL_CHARS_MAX,
)
from zhifu.webhooks.service import AttemptView, DeliveryView, SubscriptionView

register_error_mapping(webhook_errors.WebhookError, 422, "invalid-input", "Invalid input")
register_error_mapping(webhook_errors.SubscriptionNotFoundError, 404, "not-found", "Not found")
register_error_mapping(webhook_errors.DeliveryNotFoundError, 404, "not-found", "Not found")
register_error_mapping(webhook_errors.QuotaExceededError, 409, "quota-exceeded", "Too many")

router = APIRouter(prefix="/v1/partner", tags=["webhooks"], responses=problem_responses(401))

# The store's order (time-ordered ids: oldest first). Read whole and sliced by
# the pager: a key holds at most SUBSCRIPTIONS_PER_PARTNER_MAX subscriptions.
SUBSCRIPTIONS_ORDER: Final = by_id("webhooks")


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=URL_CHARS_MAX,
        examples=["https://merchant.example.com/zhifu/webhooks"],
        description="https:// to a public host (http://localhost only in development).",
    )
    event_types: list[Annotated[str, Field(max_length=EVENT_TYPE_CHARS_MAX)]] = Field(
        min_length=1,
        max_length=EVENT_TYPES_PER_SUBSCRIPTION_MAX,
        examples=[["payment.*", "refund.succeeded"]],
        description="Event types: exact names, prefixes such as 'payment.*', or '*'.",
    )


class SubscriptionOut(BaseModel):
    id: uuid.UUID
    url: str
    event_types: list[str]
    status: str
    created_ts: int
    deleted_ts: int | None
    secret: str | None = Field(
        None,
        description="Only in the answer that makes the subscription: the signing secret,"
        " standard base64 of 32 bytes. Keep it; it is never shown again.",
    )

    @classmethod
    def of(cls, v: SubscriptionView, secret: str | None = None) -> SubscriptionOut:
        return cls(
            id=v.id,
            url=v.url,
            event_types=list(v.event_types),
            status=v.status,
            created_ts=v.created_ts,
            deleted_ts=v.deleted_ts,
            secret=secret,
        )


class AttemptOut(BaseModel):
    attempt: int
    ts: int
    duration_ms: int
    succeeded: bool
    status_code: int | None = Field(description="The recipient's HTTP status, if it answered.")
    error_class: str | None = Field(description="Why there was no answer, if there was none.")
    response_excerpt: str | None = Field(description="The start of the recipient's answer.")

    @classmethod
    def of(cls, v: AttemptView) -> AttemptOut:
        return cls(
            attempt=v.attempt,
            ts=v.ts,
            duration_ms=v.duration_ms,
            succeeded=v.succeeded,
            status_code=v.status_code,
            error_class=v.error_class,
            response_excerpt=v.response_excerpt,
        )


class DeliveryOut(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    subscription_id: uuid.UUID
    origin: str = Field(description="event, replay or test.")
    replay_of: uuid.UUID | None
    status: str = Field(description="pending, succeeded, failed or cancelled.")
    created_ts: int
    completed_ts: int | None
    attempts: list[AttemptOut]

    @classmethod
    def of(cls, v: DeliveryView) -> DeliveryOut:
        return cls(
            id=v.id,
            event_id=v.event_id,
            event_type=v.event_type,
            subscription_id=v.subscription_id,
            origin=v.origin,
            replay_of=v.replay_of,
            status=v.status,
            created_ts=v.created_ts,
            completed_ts=v.completed_ts,
            attempts=[AttemptOut.of(a) for a in v.attempts],
        )


class DeliveryPageOut(BaseModel):
    deliveries: list[DeliveryOut]
    next_before: uuid.UUID | None = Field(
        description="Pass as ?before= for the next, older page; null on the last page."
    )


@router.post(
    "/webhooks",
    status_code=201,
    response_model=SubscriptionOut,
    summary="Subscribe a URL to webhook events",
    responses=problem_responses(404, 409, 422),
)
async def create_webhook(
    body: SubscriptionIn, partner: CurrentPartner, runtime: RuntimeDep, ctx: AuditCtx
) -> SubscriptionOut:
    """The answer holds the signing secret, once. Each partner key may hold 16
    subscriptions."""
    new = await run_in_threadpool(
        runtime.webhooks.create_subscription, partner.id, body.url, body.event_types, ctx
    )
    return SubscriptionOut.of(new.subscription, new.secret)


@router.get(
    "/webhooks",
    response_model=list[SubscriptionOut],
    summary="The caller's webhook subscriptions, oldest first",
    responses=PAGE_RESPONSES,
)
async def list_webhooks(
    partner: CurrentPartner, runtime: RuntimeDep, pager: PageQuery
) -> list[SubscriptionOut]:
    views = await run_in_threadpool(runtime.webhooks.list_subscriptions, partner.id)
    return [SubscriptionOut.of(v) for v in pager.page(views, SUBSCRIPTIONS_ORDER)]


@router.delete(
    "/webhooks/{subscription_id}",
    status_code=204,
    summary="Delete a webhook subscription",
    responses=problem_responses(404),
)
async def delete_webhook(
    subscription_id: uuid.UUID, partner: CurrentPartner, runtime: RuntimeDep, ctx: AuditCtx
) -> Response:
    """Deliveries still waiting are cancelled instead of sent."""
    await run_in_threadpool(runtime.webhooks.delete_subscription, partner.id, subscription_id, ctx)
    return Response(status_code=204)


@router.get(
    "/webhooks/{subscription_id}/deliveries",
    response_model=DeliveryPageOut,
    summary="A subscription's delivery log",
    responses=problem_responses(404, 422),
)
async def list_deliveries(
    subscription_id: uuid.UUID,
    partner: CurrentPartner,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=DELIVERIES_PAGE_MAX)] = DELIVERIES_PAGE_DEFAULT,
    before: uuid.UUID | None = None,
) -> DeliveryPageOut:
    """Deliveries newest first, each with every attempt: its time, duration, and
    the recipient's status code and the start of its answer, or the class of the
    network error."""
    page = await run_in_threadpool(
        lambda: runtime.webhooks.deliveries(partner.id, subscription_id, limit=limit, before=before)
    )
    return DeliveryPageOut(
        deliveries=[DeliveryOut.of(v) for v in page.deliveries], next_before=page.next_before
    )


@router.post(
    "/webhook-deliveries/{delivery_id}/replay",
    status_code=202,
    response_model=DeliveryOut,
    summary="Send a delivery's event again",
    responses=problem_responses(404, 409),
)
async def replay_delivery(
    delivery_id: uuid.UUID, partner: CurrentPartner, runtime: RuntimeDep, ctx: AuditCtx
) -> DeliveryOut:
    """A new delivery of the same event (same Zhifu-Webhook-Id) to the same
    subscription, sent within seconds. At most 20 test and replay deliveries of
    a subscription may wait at a time."""
    view = await run_in_threadpool(
        lambda: runtime.webhooks.replay(delivery_id, ctx, partner_key_id=partner.id)
    )
    return DeliveryOut.of(view)


@router.post(
    "/webhooks/{subscription_id}/test",
    status_code=202,
    response_model=DeliveryOut,
    summary="Send a webhook.test event to a subscription",
    responses=problem_responses(404, 409),
)
async def test_webhook(
    subscription_id: uuid.UUID, partner: CurrentPartner, runtime: RuntimeDep, ctx: AuditCtx
) -> DeliveryOut:
    """Whatever the subscription's event types: a way to check the endpoint and
    its signature check."""
    view = await run_in_threadpool(runtime.webhooks.send_test, partner.id, subscription_id, ctx)
    return DeliveryOut.of(view)
