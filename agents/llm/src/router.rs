//! Which provider a call goes to: the first, in the configured priority
//! order, whose circuit admits a call and whose quota is not spent (the
//! fallback order, as LiteLLM's router falls back between deployments).
//! When every circuit is open, callers wait, without polling, until one
//! opens up; [`Router::ready`] lets the agent stop taking new questions
//! meanwhile.
//!
//! Each provider has its own rate limiter and circuit: one provider's
//! outage or quota never slows another.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::breaker::{Admission, BreakerConfig, Health};
use crate::circuit::Circuit;
use crate::limiter::{Limiter, RateConfig};
use crate::Provider;

/// One provider in the fallback order.
pub struct Route {
    pub provider: Arc<dyn Provider>,
    pub limiter: Limiter,
    pub circuit: Arc<Circuit>,
}

impl Route {
    /// The provider as summaries and stored answers name it.
    pub fn label(&self) -> &str {
        self.circuit.label()
    }
}

/// A route chosen for one call.
#[derive(Debug, Clone, Copy)]
pub struct Pick {
    pub index: usize,
    /// The call is the half-open probe of its circuit.
    pub probe: bool,
}

pub struct Router {
    routes: Vec<Route>,
    /// Woken whenever a circuit changes state or a probe reports.
    changed: Notify,
}

/// Labels for providers in order: their names, with `#N` (the position,
/// from 1) on a name that comes more than once.
pub fn labels(names: &[&str]) -> Vec<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for name in names {
        *seen.entry(name).or_default() += 1;
    }
    names
        .iter()
        .enumerate()
        .map(|(i, name)| match seen[name] {
            1 => name.to_string(),
            _ => format!("{name}#{}", i + 1),
        })
        .collect()
}

impl Router {
    /// Providers in priority order, each with its own limiter and circuit.
    pub fn new(
        providers: Vec<Arc<dyn Provider>>,
        rate: &RateConfig,
        breaker: &BreakerConfig,
    ) -> Self {
        assert!(!providers.is_empty(), "at least one provider");
        let names: Vec<&str> = providers.iter().map(|p| p.name()).collect();
        let labels = labels(&names);
        let routes = providers
            .into_iter()
            .zip(labels)
            .map(|(provider, label)| Route {
                provider,
                limiter: Limiter::new(rate.clone()),
                circuit: Arc::new(Circuit::new(label, breaker.clone())),
            })
            .collect();
        Self {
            routes,
            changed: Notify::new(),
        }
    }

    pub fn route(&self, pick: Pick) -> &Route {
        &self.routes[pick.index]
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route for the next call. Providers whose quota is spent are
    /// passed over while another admits a call, and chosen (their limiter
    /// makes the call wait) only when none does. While every circuit is
    /// open this waits, spending nothing.
    pub async fn pick(&self) -> Pick {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            for quota_spent in [false, true] {
                for (index, route) in self.routes.iter().enumerate() {
                    if route.limiter.paused_until().is_some() != quota_spent {
                        continue;
                    }
                    if let Admission::Call { probe } = route.circuit.admit() {
                        return Pick { index, probe };
                    }
                }
            }
            self.wait(notified).await;
        }
    }

    /// Return once some provider would take a call: the agent waits here
    /// before taking a new question.
    pub async fn ready(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.routes.iter().any(|r| r.circuit.would_admit()) {
                return;
            }
            self.wait(notified).await;
        }
    }

    /// Until a circuit changes or the earliest open period ends.
    async fn wait(&self, notified: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>) {
        let until = self
            .routes
            .iter()
            .filter_map(|r| r.circuit.open_until())
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let _ = tokio::time::timeout_at(until, notified).await;
    }

    /// Report what the picked call showed of its provider.
    pub fn record(&self, pick: Pick, health: Health) {
        let changed = self.route(pick).circuit.record(pick.probe, health);
        if changed || pick.probe {
            self.changed.notify_waiters();
        }
    }

    /// Whether a provider other than `pick`'s has quota left and a circuit
    /// that would take a call: where a question goes instead of parking.
    pub fn fallback_for_quota(&self, pick: Pick) -> bool {
        self.routes.iter().enumerate().any(|(i, r)| {
            i != pick.index && r.limiter.paused_until().is_none() && r.circuit.would_admit()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_are_told_apart_by_position() {
        assert_eq!(labels(&["openai", "ollama"]), ["openai", "ollama"]);
        assert_eq!(
            labels(&["openai", "ollama", "openai"]),
            ["openai#1", "ollama", "openai#3"]
        );
    }
}
