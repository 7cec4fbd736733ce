//! The agent's call options: hang up, hold, dial out, end the wrap-up, and the three
//! transfers with the targets they may go to. Each is a command to call-control (or, for the
//! wrap-up, the queue router) for the agent's own call.

use axum::extract::State;
use axum::Json;
use cc_bus::CommandError;
use cc_contracts::domain::{AgentNumber, DeviceId, QueueNumber};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::agent::READ_YOUR_WRITES;
use crate::error::{not_found, parsed, ApiError, ApiResult};
use crate::identity::Authed;
use crate::route::{Body, NoContent, Route, Tag, AGENT};
use crate::Portal;

/// `POST /api/call/hangup`: the agent ends the call.
pub async fn hangup(State(p): State<Portal>, who: Authed) -> ApiResult<NoContent> {
    let agent = who.agent()?;
    p.ctx
        .bus
        .request(&who.context(), &cc_contracts::call::HangupCall { agent })
        .await?;
    Ok(NoContent)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DialBody {
    /// What to dial: an extension of the tenant or an outside number, 1 to 32 of 0-9 + * #
    /// once spaces, dashes, dots and brackets are left out.
    #[schemars(
        length(max = 64),
        pattern(r"^\s*[ ().-]*(?:[0-9+*#][ ().-]*){1,32}\s*$"),
        example = &"+49 30 1234567"
    )]
    number: String,
    /// Seconds the number may ring once the agent answered their phone, before the call fails
    /// as no_answer (the agent's own phone rings 30 seconds at most); default 60.
    #[serde(default)]
    #[schemars(range(min = 1, max = 600), extend("default" = 60))]
    ring_timeout_s: Option<i64>,
}

/// The outbound call started.
#[derive(Serialize, JsonSchema)]
pub struct Dialed {
    /// The call's id (its event stream call-<call>).
    call: String,
}

/// `POST /api/call/dial`: an outbound call to a number or an extension. The agent's device
/// rings first; once they answer it, the number does. Only a logged-in agent who is Idle or
/// Paused may dial (no queue call is offered to them until the call ends).
pub async fn dial(
    State(p): State<Portal>,
    who: Authed,
    Body(b): Body<DialBody>,
) -> ApiResult<Json<Dialed>> {
    use cc_contracts::views::AgentStatus;
    let agent = who.agent()?;
    let number = parsed("number", cc_contracts::domain::DialString::parse(&b.number))?;
    let ring_timeout_s = match b.ring_timeout_s {
        None => 60,
        Some(s) if (1..=600).contains(&s) => s,
        Some(_) => {
            return Err(ApiError(CommandError::field(
                "invalid_field",
                "ring_timeout_s",
                "ring_timeout_s must be 1 to 600 seconds",
            )))
        }
    };
    crate::views::caught_up(&p.ctx, who.tenant(), READ_YOUR_WRITES).await?;
    let view = crate::views::agent(&p.ctx.pool, who.tenant(), agent.as_str())
        .await?
        .ok_or_else(|| not_found(format!("no view of agent {agent} yet")))?;
    let device = match (&view.login_time, &view.device) {
        (Some(_), Some(d)) => parsed("device", DeviceId::parse(d))?,
        _ => {
            return Err(ApiError(CommandError::new(
                "not_logged_in",
                "Complete Login first: your device rings when you dial",
            )))
        }
    };
    let busy = match view.status {
        AgentStatus::Idle | AgentStatus::Paused => None,
        AgentStatus::WrapUp => Some("End the wrap-up before you dial"),
        AgentStatus::Ringing => Some("A call is ringing your phone: answer it or let it go first"),
        _ => Some("You are on a call: end it before you dial another"),
    };
    if let Some(message) = busy {
        return Err(ApiError(CommandError::new("on_call", message)));
    }
    let call = p
        .ctx
        .bus
        .request(
            &who.context(),
            &cc_contracts::call::DialOutbound {
                agent,
                device,
                number,
                ring_timeout_s,
            },
        )
        .await?;
    Ok(Json(Dialed { call }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    /// true: put the caller on hold; false: take them off it.
    held: bool,
}

/// `POST /api/call/hold`: put the caller on hold (`{"held": true}`) or take them off it.
pub async fn hold(
    State(p): State<Portal>,
    who: Authed,
    Body(b): Body<HoldBody>,
) -> ApiResult<NoContent> {
    let agent = who.agent()?;
    p.ctx
        .bus
        .request(
            &who.context(),
            &cc_contracts::call::HoldCall {
                agent,
                held: b.held,
            },
        )
        .await?;
    Ok(NoContent)
}

/// `POST /api/call/wrap-up/end`: ready for the next call before the wrap-up time is over.
pub async fn end_wrap_up(State(p): State<Portal>, who: Authed) -> ApiResult<NoContent> {
    let agent = who.agent()?;
    p.ctx
        .bus
        .request(&who.context(), &cc_contracts::call::EndWrapUp { agent })
        .await?;
    Ok(NoContent)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    method: cc_contracts::call::TransferMethod,
    target: TargetBody,
    /// Seconds the target may ring before the transfer fails as not answered (default 30).
    #[serde(default)]
    #[schemars(range(min = 1, max = 600), extend("default" = 30))]
    ring_timeout_s: Option<i64>,
}

/// Exactly one of: an extension of the tenant, a logged-in agent (their device rings), a
/// queue (the customer re-enters it at the head; blind only), an outside number.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    { "required": ["extension"], "properties": { "extension": { "type": "string" } } },
    { "required": ["agent"], "properties": { "agent": { "type": "string" } } },
    { "required": ["queue"], "properties": { "queue": { "type": "string" } } },
    { "required": ["number"], "properties": { "number": { "type": "string" } } }
]))]
pub struct TargetBody {
    #[schemars(pattern(r"^[0-9]{1,15}$"), example = &"1003")]
    extension: Option<String>,
    #[schemars(pattern(r"^[0-9]{1,15}$"), example = &"1002")]
    agent: Option<String>,
    #[schemars(pattern(r"^[0-9]{1,15}$"), example = &"501")]
    queue: Option<String>,
    #[schemars(pattern(r"^\+?[0-9]{1,31}$"), example = &"5551234")]
    number: Option<String>,
}

fn target_error(code: &str, message: impl Into<String>) -> ApiError {
    ApiError(CommandError::field(code, "target", message))
}

/// `POST /api/call/transfer`: blind, attended or live transfer of the connected call to an
/// extension, an agent, a queue or an outside number. The target is checked before the call
/// is touched.
pub async fn transfer(
    State(p): State<Portal>,
    who: Authed,
    Body(b): Body<TransferBody>,
) -> ApiResult<NoContent> {
    use cc_contracts::call::{TransferCall, TransferTarget};
    let agent = who.agent()?;
    let pool = &p.ctx.pool;
    let tenant = who.tenant();
    let (target, device, target_agent) = match (
        b.target.extension,
        b.target.agent,
        b.target.queue,
        b.target.number,
    ) {
        (Some(e), None, None, None) => {
            let device =
                DeviceId::parse(&e).map_err(|e| target_error("invalid_field", e.message))?;
            let on = crate::views::agent_on_device(pool, tenant, device.as_str()).await?;
            let on = on
                .map(|a| AgentNumber::parse(&a))
                .transpose()
                .map_err(|e| ApiError(CommandError::internal(e.message)))?;
            (TransferTarget::Extension(device.clone()), Some(device), on)
        }
        (None, Some(a), None, None) => {
            let target =
                AgentNumber::parse(&a).map_err(|e| target_error("invalid_field", e.message))?;
            if target == agent {
                return Err(target_error(
                    "own_device",
                    "you cannot transfer a call to yourself",
                ));
            }
            let view = crate::views::agent(pool, tenant, target.as_str())
                .await?
                .ok_or_else(|| {
                    target_error("unknown_agent", format!("There is no agent {target}"))
                })?;
            let device = match (&view.login_time, &view.device) {
                (Some(_), Some(d)) => {
                    DeviceId::parse(d).map_err(|e| ApiError(CommandError::internal(e.message)))?
                }
                _ => {
                    return Err(target_error(
                        "agent_not_logged_in",
                        format!("Agent {target} is not logged in"),
                    ))
                }
            };
            (
                TransferTarget::Agent(target.clone()),
                Some(device),
                Some(target),
            )
        }
        (None, None, Some(q), None) => {
            let queue =
                QueueNumber::parse(&q).map_err(|e| target_error("invalid_field", e.message))?;
            if !crate::views::queues(pool, tenant)
                .await?
                .iter()
                .any(|(n, _)| n == queue.as_str())
            {
                return Err(target_error(
                    "unknown_queue",
                    format!("There is no queue {queue}"),
                ));
            }
            (TransferTarget::Queue(queue), None, None)
        }
        (None, None, None, Some(n)) => (TransferTarget::Number(n.trim().to_string()), None, None),
        _ => {
            return Err(target_error(
                "invalid_field",
                "give exactly one of extension, agent, queue or number",
            ))
        }
    };
    let ring_timeout_s = match b.ring_timeout_s {
        None => 30,
        Some(s) if (1..=600).contains(&s) => s,
        Some(_) => {
            return Err(ApiError(CommandError::field(
                "invalid_field",
                "ring_timeout_s",
                "ring_timeout_s must be 1 to 600 seconds",
            )))
        }
    };
    let cmd = TransferCall {
        agent,
        method: b.method,
        target,
        device,
        target_agent,
        ring_timeout_s,
    };
    p.ctx.bus.request(&who.context(), &cmd).await?;
    Ok(NoContent)
}

/// `POST /api/call/transfer/complete`: the agent drops; the customer stays with the target.
pub async fn complete_transfer(State(p): State<Portal>, who: Authed) -> ApiResult<NoContent> {
    let agent = who.agent()?;
    p.ctx
        .bus
        .request(
            &who.context(),
            &cc_contracts::call::CompleteTransfer { agent },
        )
        .await?;
    Ok(NoContent)
}

/// `POST /api/call/transfer/cancel`: the target's leg ends; the customer is back with the agent.
pub async fn cancel_transfer(State(p): State<Portal>, who: Authed) -> ApiResult<NoContent> {
    let agent = who.agent()?;
    p.ctx
        .bus
        .request(
            &who.context(),
            &cc_contracts::call::CancelTransfer { agent },
        )
        .await?;
    Ok(NoContent)
}

/// Where the agent may transfer a call.
#[derive(Serialize, JsonSchema)]
pub struct TransferTargets {
    extensions: Vec<ExtensionTarget>,
    agents: Vec<AgentTarget>,
    queues: Vec<cc_contracts::views::QueueRef>,
}

/// An extension of the tenant.
#[derive(Serialize, JsonSchema)]
pub struct ExtensionTarget {
    device: String,
    online: bool,
    /// The agent logged in on it, if any.
    agent: Option<String>,
}

/// Another agent of the tenant (enabled).
#[derive(Serialize, JsonSchema)]
pub struct AgentTarget {
    agent: String,
    display_name: String,
    status: cc_contracts::views::AgentStatus,
    status_label: String,
    device: Option<String>,
}

/// `GET /api/transfer-targets`: the tenant's extensions (online or not, with the agent logged
/// in on each), the other agents with their status, and the queues.
pub async fn transfer_targets(
    State(p): State<Portal>,
    who: Authed,
) -> ApiResult<Json<TransferTargets>> {
    let me = who.agent()?;
    let views = crate::views::agents(&p.ctx.pool, who.tenant()).await?;
    let devices = p
        .ctx
        .bus
        .request(&who.context(), &cc_contracts::pbx::ListDevices {})
        .await?;
    let on_device = |d: &str| {
        views
            .iter()
            .find(|v| v.login_time.is_some() && v.device.as_deref() == Some(d))
            .map(|v| v.agent.clone())
    };
    let extensions = devices
        .iter()
        .map(|d| ExtensionTarget {
            device: d.device.to_string(),
            online: d.registered,
            agent: on_device(d.device.as_str()),
        })
        .collect();
    let agents = views
        .iter()
        .filter(|v| v.agent != me.as_str() && v.enabled)
        .map(|v| AgentTarget {
            agent: v.agent.clone(),
            display_name: v.display_name.clone(),
            status: v.status,
            status_label: v.status_label.clone(),
            device: v.device.clone(),
        })
        .collect();
    let queues = crate::views::queues(&p.ctx.pool, who.tenant())
        .await?
        .into_iter()
        .map(|(queue, name)| cc_contracts::views::QueueRef { queue, name })
        .collect();
    Ok(Json(TransferTargets {
        extensions,
        agents,
        queues,
    }))
}

/// A call command's refusals when the agent has no call of their own (or is the target of
/// another agent's transfer).
const NO_CALL: [&str; 2] = ["no_call", "transfer_target"];

pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route::post("/api/call/hangup", hangup)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("Hangup: end the agent's call (then wrap-up); during a dial, end the dial; as the target of a transfer not complete yet, leave it")
            .commands(&NO_CALL),
        Route::post("/api/call/hold", hold)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("Hold or resume the caller")
            .commands(&["no_call", "transfer_target", "not_connected", "already_on_hold", "not_on_hold"]),
        Route::post("/api/call/dial", dial)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("Dial a number or an extension (an outbound call)")
            .description("The agent's device rings first (showing the number); once the agent answers it, the number (an outside number through the tenant's PBX or trunk) or the extension (a device of the tenant) rings: 30 seconds for the agent's phone, ring_timeout_s (default 60) for the far end. When the far end answers the call is connected and has the usual options (hangup, hold, the three transfers). POST /api/call/hangup before that ends the dial (dial_failure cancelled). Not a queue call: no ACD offer, no wrap-up, and no queue call is offered to the agent until it ends. Only a logged-in agent who is Idle or Paused may dial. Events: OutboundCallStarted, OutboundCallDialed, then CallConnected ... CallEnded, or OutboundCallFailed. Reported in reporting.calls with direction outbound.")
            .commands(&["not_found", "not_logged_in", "on_call", "own_device", "device_offline", "unknown_device", "device_unavailable", "no_route"])
            .notes(&[
                (200, "The agent's device rings; the call's events and the agent view (status dialing) follow"),
                (400, "Bad input (names the field): number is not 1 to 32 of 0-9 + * # (spaces, dashes, dots and brackets are left out), or missing; ring_timeout_s not 1 to 600"),
                (404, "No view of the agent yet"),
                (409, "Refused by the current state: not logged in (Complete Login first), or ringing, on a call or in wrap-up"),
                (422, "The call cannot be placed (field number or device): the agent's own device is not registered, the agent dialled their own extension, the extension dialled is not registered or unknown, or an outside number and the tenant has no trunk (the SIP gateway without CC_SIP_PBX)"),
            ]),
        Route::post("/api/call/wrap-up/end", end_wrap_up)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("End the wrap-up early: ready for the next call")
            .commands(&["not_in_wrap_up", "disposition_required"])
            .notes(&[(409, "Refused by the current state: not in wrap-up, or the queue requires a disposition not given yet (field disposition)")]),
        Route::post("/api/call/transfer", transfer)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("Transfer the connected call")
            .description("Blind: the customer goes to the target and the agent drops at once (if the target does not answer, the customer re-enters the call's queue at the head). Attended: the customer is put on hold while the agent consults the target; then Complete or Cancel. Live: customer, agent and target in one call; Complete drops the agent. The target is checked before the call is touched. invalid_field names target or method. See docs/transfers.md.")
            .commands(&["no_call", "transfer_target", "not_connected", "transfer_in_progress", "unknown_extension", "unknown_agent", "unknown_queue", "device_offline", "own_device", "agent_not_logged_in"])
            .notes(&[
                (404, "No such extension, agent or queue"),
                (422, "The target cannot be used: offline, the agent's own, or an agent not logged in"),
            ]),
        Route::post("/api/call/transfer/complete", complete_transfer)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("Complete the attended or live transfer")
            .description("The agent drops from the call; the customer stays with the target (if the target has not answered yet, the customer waits for it as in a blind transfer). The agent's Completed count moves now. Error no_transfer when none is going on.")
            .commands(&["no_call", "transfer_target", "no_transfer"]),
        Route::post("/api/call/transfer/cancel", cancel_transfer)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("Cancel the attended or live transfer")
            .description("The target's leg ends and the customer is back with the agent (taken off hold). Error no_transfer when none is going on.")
            .commands(&["no_call", "transfer_target", "no_transfer"]),
        Route::get("/api/transfer-targets", transfer_targets)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("Transfer targets")
            .description("The tenant's extensions (online or not, with the agent logged in on each), the other agents with their status, and the queues.")
            .commands(&[]),
    ]
}
