//! The trunk module: `gateway/NAME/USER` targets (an [`Endpoint`]), the gateway's caller-ID
//! rules, ANI pool and redaction on every INVITE to it (an [`InviteFilter`] that runs last,
//! so nothing a gateway must not see survives), and its pings and registrations (a
//! [`Service`], in `service.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use switchboard_core::guard::PeerRule;
use switchboard_core::module::{
    AttemptError, Declarations, Endpoint, FilterError, FilterOrder, InviteFilter, OriginateCtx,
    OutgoingInvite, Route, Service, TargetRef,
};
use switchboard_core::{CallRef, Module};
use switchboard_dialplan::{EndpointSpec, Target};
use switchboard_sip::transaction::Peer;
use switchboard_sip::{Name, Response};
use tracing::{info, warn};

use crate::Gateways;
use crate::ani::WhenEmpty;
use crate::digest::authorization;
use switchboard_core::{escape_user, fmt_addr, transport_param};

/// The trunk filter runs after every other: a gateway's redaction is the last word.
pub const FILTER_ORDER: FilterOrder = 1000;

/// How often a call queued for a pool number looks again.
const ANI_RETRY: Duration = Duration::from_millis(200);

/// A number a call holds from a gateway's pool.
#[derive(Debug)]
struct Lease {
    gateway: String,
    number: String,
    attempts: u32,
}

/// The trunk module.
#[derive(Debug, Default)]
pub struct Trunk {
    pub(crate) gateways: Gateways,
    /// Per call: the numbers it holds, one per gateway, with how many of its live attempts
    /// use each (ring-all to one gateway twice shares its number).
    leases: HashMap<CallRef, Vec<Lease>>,
    /// Per call: waiting for a pool number since.
    waiting: HashMap<CallRef, Instant>,
    pub(crate) service: crate::service::State,
}

impl Trunk {
    /// The module for these gateways.
    pub fn new(gateways: Gateways) -> Trunk {
        Trunk {
            gateways,
            ..Trunk::default()
        }
    }

    /// What `gateway/...` targets may name, for the dialplan compiler.
    pub fn endpoint_spec(gateways: &Gateways) -> EndpointSpec {
        EndpointSpec {
            kind: "gateway".into(),
            names: Some(gateways.names()),
            none_hint: "no gateway is configured: add one under [gateway.NAME] in switchboard.toml"
                .into(),
        }
    }

    /// The gateways and their state.
    pub fn gateways(&self) -> &Gateways {
        &self.gateways
    }

    /// Swaps in new gateways (a reload), keeping the health, registrations and leases of
    /// those that did not move.
    pub fn set_gateways(&mut self, mut gateways: Gateways) {
        gateways.carry_state_from(&self.gateways);
        self.gateways = gateways;
    }

    /// Marks a gateway up or down by hand; `false` when there is no such gateway.
    pub fn set_gateway_up(&mut self, name: &str, up: bool) -> bool {
        self.gateways.set_up(name, up)
    }

    /// A pool number rests until `until` (leases a previous run left behind, at start).
    pub fn ani_rest_until(&mut self, gateway: &str, number: &str, until: Instant) {
        if let Some(p) = self.gateways.get_mut(gateway).and_then(|g| g.ani.as_mut()) {
            p.cool_until(number, until);
        }
    }

    fn give_back(&mut self, now: Instant, lease: Lease) -> (String, String) {
        if let Some(pool) = self
            .gateways
            .get_mut(&lease.gateway)
            .and_then(|g| g.ani.as_mut())
        {
            pool.release(now, &lease.number);
        }
        (lease.gateway, lease.number)
    }

    /// A call to a gateway with an ANI pool presents a number of its own: leased once per
    /// call and gateway, held while an attempt through that gateway lives (a failed attempt
    /// gives it back before the next target is tried; the answered one keeps it to the end).
    fn lease_ani(
        &mut self,
        now: Instant,
        name: &str,
        invite: &mut OutgoingInvite,
    ) -> Result<(), FilterError> {
        let call = invite.call;
        if self.gateways.get(name).is_none_or(|g| g.ani.is_none()) {
            return Ok(());
        }
        if let Some(l) = self
            .leases
            .get_mut(&call)
            .and_then(|ls| ls.iter_mut().find(|l| l.gateway == name))
        {
            l.attempts += 1;
            invite.caller.number.clone_from(&l.number);
            return Ok(());
        }
        let Some(pool) = self.gateways.get_mut(name).and_then(|g| g.ani.as_mut()) else {
            return Ok(());
        };
        match pool.lease(now, call.0) {
            Some(n) => {
                info!(gateway = %name, ani = %n, in_use = pool.in_use(), of = pool.size(), "caller number leased");
                invite.note_lease(name, &n);
                invite.caller.number.clone_from(&n);
                self.leases.entry(call).or_default().push(Lease {
                    gateway: name.to_owned(),
                    number: n,
                    attempts: 1,
                });
                self.waiting.remove(&call);
                Ok(())
            }
            None => match pool.when_empty {
                WhenEmpty::Fallback => {
                    warn!(gateway = %name, "ANI pool exhausted: the usual caller ID is presented");
                    Ok(())
                }
                WhenEmpty::Reject => {
                    warn!(gateway = %name, "ANI pool exhausted: attempt refused (ani_when_empty = reject)");
                    Err(FilterError::Refused(pool_empty(name)))
                }
                WhenEmpty::Queue(max) => {
                    let since = *self.waiting.entry(call).or_insert_with(|| {
                        info!(gateway = %name, "ANI pool exhausted: the call waits for a number (ani_when_empty = queue)");
                        now
                    });
                    if now.saturating_duration_since(since) < max {
                        return Err(FilterError::Wait(ANI_RETRY));
                    }
                    self.waiting.remove(&call);
                    warn!(gateway = %name, waited_secs = max.as_secs(), "no pool number came back in time: attempt refused");
                    Err(FilterError::Refused(pool_empty(name)))
                }
            },
        }
    }
}

fn pool_empty(gateway: &str) -> AttemptError {
    AttemptError::Refused {
        module: "trunk",
        reason: format!("gateway {gateway}'s ANI pool has no free number"),
    }
}

impl Module for Trunk {
    fn name(&self) -> &'static str {
        "trunk"
    }

    fn declare(&self) -> Declarations {
        Declarations {
            endpoints: vec![Trunk::endpoint_spec(&self.gateways)],
            actions: Vec::new(),
            filter: Some(FILTER_ORDER),
        }
    }

    fn endpoint(&mut self) -> Option<&mut dyn Endpoint> {
        Some(self)
    }

    fn invite_filter(&mut self) -> Option<&mut dyn InviteFilter> {
        Some(self)
    }

    fn service(&mut self) -> Option<&mut dyn Service> {
        Some(self)
    }

    fn peers(&self) -> Vec<PeerRule> {
        self.gateways
            .iter()
            .flat_map(|g| {
                g.acl.iter().map(|net| PeerRule {
                    net: *net,
                    context: g.config.context.clone(),
                    name: format!("gateway {}", g.name),
                })
            })
            .collect()
    }

    fn metrics(&self, now: Instant, o: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            o,
            "# HELP switchboard_gateway_registered Outbound registration in force (1) or not (0).\n# TYPE switchboard_gateway_registered gauge"
        );
        for g in self.gateways.iter().filter(|g| g.registration.is_some()) {
            let _ = writeln!(
                o,
                "switchboard_gateway_registered{{gateway=\"{}\"}} {}",
                g.name,
                u8::from(g.is_registered(now))
            );
        }
        let _ = writeln!(
            o,
            "# HELP switchboard_gateway_up Gateway health (1 up, 0 down).\n# TYPE switchboard_gateway_up gauge"
        );
        for g in self.gateways.iter() {
            let _ = writeln!(
                o,
                "switchboard_gateway_up{{gateway=\"{}\"}} {}",
                g.name,
                u8::from(g.is_up())
            );
        }
    }
}

impl Endpoint for Trunk {
    fn resolve(
        &mut self,
        _now: Instant,
        target: TargetRef<'_>,
        ctx: &OriginateCtx<'_>,
    ) -> Result<Route, AttemptError> {
        let gw = self
            .gateways
            .get(target.name)
            .ok_or_else(|| AttemptError::UnknownTarget {
                kind: "gateway".into(),
                name: target.name.to_owned(),
            })?;
        if !gw.is_up() {
            return Err(AttemptError::Down(format!("gateway {}", gw.name)));
        }
        let user = if target.user.is_empty() {
            ctx.destination
        } else {
            target.user
        };
        let request_uri = format!(
            "sip:{}@{}{}",
            escape_user(user),
            fmt_addr(gw.addr),
            transport_param(gw.transport)
        );
        let (number, name) = gw.caller_id(&ctx.caller.number, &ctx.caller.name);
        Ok(Route {
            peer: Peer {
                transport: gw.transport,
                addr: gw.addr,
            },
            request_uri,
            caller: switchboard_core::module::CallerId { number, name },
            dtmf: gw.dtmf,
            srtp: gw.srtp,
        })
    }

    fn answer_challenge(
        &mut self,
        target: TargetRef<'_>,
        challenge: &Response,
        method: &str,
        uri: &str,
        cnonce: &str,
    ) -> Option<(Name, String)> {
        let gw = self.gateways.get(target.name)?;
        let (header, value) = crate::service::answer_for(challenge)?;
        let answer = authorization(value, method, uri, gw.credentials()?, cnonce, 1).ok()?;
        Some((header, answer))
    }
}

impl InviteFilter for Trunk {
    fn filter(&mut self, now: Instant, invite: &mut OutgoingInvite) -> Result<(), FilterError> {
        let Target::Endpoint { kind, name, .. } = &invite.target else {
            return Ok(());
        };
        if kind != "gateway" {
            return Ok(());
        }
        let name = name.clone();
        self.lease_ani(now, &name, invite)?;
        // The trunk's policy last: what it must never see is gone whatever was added.
        if let Some(gw) = self.gateways.get(&name) {
            for h in gw.config.redact_headers.iter().flatten() {
                invite.remove_header(h);
            }
        }
        Ok(())
    }

    fn attempt_ended(
        &mut self,
        now: Instant,
        call: CallRef,
        target: &Target,
    ) -> Vec<(String, String)> {
        let Target::Endpoint { kind, name, .. } = target else {
            return Vec::new();
        };
        let Some(leases) = self.leases.get_mut(&call).filter(|_| kind == "gateway") else {
            return Vec::new();
        };
        let Some(i) = leases.iter().position(|l| &l.gateway == name) else {
            return Vec::new();
        };
        leases[i].attempts = leases[i].attempts.saturating_sub(1);
        if leases[i].attempts > 0 {
            return Vec::new();
        }
        let lease = leases.swap_remove(i);
        if leases.is_empty() {
            self.leases.remove(&call);
        }
        vec![self.give_back(now, lease)]
    }

    fn call_ended(&mut self, now: Instant, call: CallRef) -> Vec<(String, String)> {
        self.waiting.remove(&call);
        let leases = self.leases.remove(&call).unwrap_or_default();
        leases.into_iter().map(|l| self.give_back(now, l)).collect()
    }
}
