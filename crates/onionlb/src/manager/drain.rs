//! Drains asked for on the admin socket (`onionlb drain`) or by an
//! agent (its drain file), and how one stands, in the words each is
//! answered with. Whether an instance may be drained, and when it is
//! drained, is the balancer's to say ([`Balancer::drain`],
//! [`Balancer::drain_state`]); this names the instance and words the
//! answer.

use onionlb_core::agent::ToAgent;
use onionlb_core::balancer::{Balancer, DrainState, Now};
use onionlb_core::OnionAddress;
use rand::rngs::StdRng;

use crate::admin::{Answer, Request};
use crate::config::Config;

/// Carries out an admin request (drain, undrain, how far a drain has
/// come) on the instance `config` names, and says how it stands.
pub fn admin(
    balancer: &mut Balancer<StdRng>,
    config: &Config,
    request: Request,
    now: Now,
) -> Answer {
    let name = match &request {
        Request::Drain { instance, .. } | Request::State { instance } => instance.clone(),
    };
    let Some((address, label)) = resolve(config, &name) else {
        return Answer {
            error: Some(format!("no instance named {name} is configured")),
            instance: name,
            ..Answer::default()
        };
    };
    let mut answer = Answer {
        instance: label,
        ..Answer::default()
    };
    if let Request::Drain { drain, .. } = request {
        if let Err(refused) = balancer.drain(address, drain, now) {
            answer.error = Some(refused.to_string());
        }
    }
    let (state, until) = stand(balancer, address, now);
    answer.state = state.into();
    answer.clients_may_try_until = until;
    answer
}

/// Drains `instance` (or ends its drain) as its agent asked, and answers
/// how it stands: `serving`, `draining`, or `drained until TIME`.
pub fn for_agent(
    balancer: &mut Balancer<StdRng>,
    instance: OnionAddress,
    drain: bool,
    now: Now,
) -> ToAgent {
    if let Err(refused) = balancer.drain(instance, drain, now) {
        return ToAgent::Rejected(refused.to_string());
    }
    ToAgent::Accepted(match stand(balancer, instance, now) {
        (state, Some(until)) => format!("{state} until {until}"),
        (state, None) => state.into(),
    })
}

/// How `instance`'s drain stands: `serving`, `draining` or `drained`,
/// and once drained until when older client copies may try it (UTC;
/// see [`DrainState::Drained`]).
fn stand(
    balancer: &Balancer<StdRng>,
    instance: OnionAddress,
    now: Now,
) -> (&'static str, Option<String>) {
    match balancer.drain_state(&instance, now.wall) {
        None => ("serving", None),
        Some(DrainState::Draining) => ("draining", None),
        Some(DrainState::Drained { until }) => {
            ("drained", Some(crate::status::report::timestamp(until)))
        }
    }
}

/// The address and name of the instance configured as `name` (its
/// `name:` or its address).
fn resolve(config: &Config, name: &str) -> Option<(OnionAddress, String)> {
    let by_address = name.parse::<OnionAddress>().ok();
    config
        .services
        .iter()
        .flat_map(|s| &s.instances)
        .find(|i| i.name.as_deref() == Some(name) || Some(i.address) == by_address)
        .map(|i| (i.address, i.label()))
}
