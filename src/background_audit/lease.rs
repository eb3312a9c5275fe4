//! Leader election on a `coordination.k8s.io/v1` Lease: of the audit replicas, only the
//! holder writes reports; the others stand by and take over when it stops renewing.
//!
//! The rules are client-go's `leaderelection`, written out small:
//! - A lease is expired when its record has not changed for its `leaseDurationSeconds`,
//!   measured on *our* clock from when we saw it change (never by comparing the holder's
//!   `renewTime` with our clock: nodes' clocks differ).
//! - Every write is a replace guarded by the `resourceVersion` we read, so two candidates
//!   cannot both win: the loser gets 409 Conflict and stands by.
//! - A holder stops leading when it has not renewed for the renew deadline, which is
//!   shorter than the lease duration: it stops writing before anyone else may start.
//!
//! [`Elector`] is the state machine, without a cluster or a clock of its own (tests drive it
//! with made-up instants); [`run`] is the loop that feeds it the Lease and writes its plans.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Error as KubeError};
use tokio::sync::watch;

/// How the election is timed; client-go's defaults are 15 s, 10 s and 2 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// How long a lease holds without renewal (written into the Lease).
    pub(crate) duration: Duration,
    /// How long the holder keeps leading without a successful renewal.
    pub(crate) renew_deadline: Duration,
    /// How often every candidate reads the lease (and the holder renews it).
    pub(crate) retry_period: Duration,
}

impl Timing {
    /// Refuses timings under which two replicas could lead at once.
    pub(crate) fn new(
        duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            duration.as_secs() >= 1 && renew_deadline < duration,
            "the renew deadline ({renew_deadline:?}) must be shorter than the lease duration \
             ({duration:?}, at least 1 s): a holder must stop writing before another replica \
             may take over"
        );
        anyhow::ensure!(
            !retry_period.is_zero() && retry_period < renew_deadline,
            "the retry period ({retry_period:?}) must be shorter than the renew deadline \
             ({renew_deadline:?}), or the holder loses the lease between two renewals"
        );
        Ok(Self {
            duration,
            renew_deadline,
            retry_period,
        })
    }
}

/// The parts of a Lease the election reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    /// `spec.holderIdentity`; `None` (or empty) once released.
    pub(crate) holder: Option<String>,
    /// `metadata.resourceVersion`: changes on every write, renewals included.
    pub(crate) resource_version: String,
    /// `spec.leaseDurationSeconds`, the holder's own.
    pub(crate) duration: Option<Duration>,
    /// `spec.leaseTransitions`.
    pub(crate) transitions: i32,
}

impl Observed {
    /// Reads a Lease (one without a resourceVersion cannot be replaced safely: `None`).
    pub(crate) fn from_lease(lease: &Lease) -> Option<Self> {
        let spec = lease.spec.as_ref();
        Some(Self {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            resource_version: lease.metadata.resource_version.clone()?,
            duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
            transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0),
        })
    }
}

/// What to do after reading the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// There is no lease: create it, held by us.
    Create,
    /// Write ourselves as holder over exactly this version.
    Claim {
        /// The version read; the write fails with 409 if anyone wrote since.
        resource_version: String,
        /// `leaseTransitions` to write (one more than read when the holder changes).
        transitions: i32,
        /// We did not hold it: `acquireTime` is set anew.
        takeover: bool,
    },
    /// Someone else holds a current lease.
    StandBy {
        /// Who.
        holder: String,
    },
}

/// One candidate's view of the election.
#[derive(Debug)]
pub(crate) struct Elector {
    identity: String,
    timing: Timing,
    /// The record last seen (by resourceVersion) and when, on our clock.
    seen: Option<(String, Instant)>,
    /// When our last write of the lease succeeded, while we hold it.
    renewed_at: Option<Instant>,
}

impl Elector {
    /// A candidate named `identity` (the pod's name).
    pub(crate) fn new(identity: String, timing: Timing) -> Self {
        Self {
            identity,
            timing,
            seen: None,
            renewed_at: None,
        }
    }

    /// Decides what to do about the lease as read at `now` (`None`: there is none).
    pub(crate) fn plan(&mut self, lease: Option<&Observed>, now: Instant) -> Plan {
        let Some(lease) = lease else {
            return Plan::Create;
        };
        let changed_at = match &self.seen {
            Some((version, at)) if *version == lease.resource_version => *at,
            _ => {
                self.seen = Some((lease.resource_version.clone(), now));
                now
            }
        };
        let ours = lease.holder.as_deref() == Some(self.identity.as_str());
        let duration = lease.duration.unwrap_or(self.timing.duration);
        match &lease.holder {
            Some(holder) if !ours && now.duration_since(changed_at) < duration => {
                self.renewed_at = None;
                Plan::StandBy {
                    holder: holder.clone(),
                }
            }
            _ => Plan::Claim {
                resource_version: lease.resource_version.clone(),
                transitions: if ours {
                    lease.transitions
                } else {
                    lease.transitions.saturating_add(1)
                },
                takeover: !ours,
            },
        }
    }

    /// Our write (create or claim) succeeded at `now`, giving the lease this version.
    pub(crate) fn claimed(&mut self, resource_version: Option<String>, now: Instant) {
        self.renewed_at = Some(now);
        self.seen = resource_version.map(|v| (v, now));
    }

    /// Until when we lead, if we do: the last renewal plus the renew deadline.
    pub(crate) fn leading_until(&self) -> Option<Instant> {
        self.renewed_at.map(|at| at + self.timing.renew_deadline)
    }

    /// Whether we lead at `now`.
    pub(crate) fn is_leader(&self, now: Instant) -> bool {
        self.leading_until().is_some_and(|until| now < until)
    }
}

/// Where the lease is, and who we are.
#[derive(Debug, Clone)]
pub(crate) struct LeaseConfig {
    /// The Lease's name.
    pub(crate) name: String,
    /// Its namespace (the audit's own).
    pub(crate) namespace: String,
    /// This replica's name: the pod's.
    pub(crate) identity: String,
    /// The timing.
    pub(crate) timing: Timing,
}

/// Who leads: `Some(deadline)` while this replica holds the lease (writes must be done
/// before the deadline), `None` while another does or nobody.
pub(crate) type Leadership = watch::Receiver<Option<Instant>>;

/// Whether a leadership value means "lead now".
pub(crate) fn leads(leadership: &Option<Instant>) -> bool {
    leadership.is_some_and(|until| Instant::now() < until)
}

/// Runs the election until `stop`, publishing leadership on `tx`; releases the lease on
/// the way out if it holds it, so a standby takes over at its next read instead of
/// waiting out the lease.
pub(crate) async fn run(
    api: Api<Lease>,
    config: LeaseConfig,
    tx: watch::Sender<Option<Instant>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut elector = Elector::new(config.identity.clone(), config.timing);
    let mut tick = tokio::time::interval(config.timing.retry_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut standing_by: Option<String> = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        // Each round is bounded: a hung API call must not keep us "leading" on stale
        // grounds (leadership decays by itself) nor stall the loop.
        let round = tokio::time::timeout(
            config.timing.renew_deadline,
            round(&api, &config, &mut elector),
        )
        .await;
        match round {
            Ok(Ok(Plan::StandBy { holder })) => {
                if standing_by.as_deref() != Some(holder.as_str()) {
                    tracing::info!(%holder, lease = %config.name, "standing by: another replica writes the reports");
                    standing_by = Some(holder);
                }
            }
            Ok(Ok(_)) => standing_by = None,
            // A failed renewal changes nothing at once: leadership runs out at the renew
            // deadline unless a later round succeeds.
            Ok(Err(err)) => {
                tracing::warn!(error = %err, lease = %config.name, "lease round failed");
            }
            Err(_) => tracing::warn!(lease = %config.name, "lease round timed out"),
        }
        let until = elector.leading_until();
        let was = leads(&tx.borrow());
        tx.send_replace(until.filter(|u| Instant::now() < *u));
        let is = elector.is_leader(Instant::now());
        if was != is {
            tracing::info!(identity = %config.identity, leader = is, "leadership changed");
        }
    }
    let held = elector.is_leader(Instant::now());
    tx.send_replace(None);
    if held {
        match tokio::time::timeout(config.timing.renew_deadline, release(&api, &config)).await {
            Ok(Ok(())) => tracing::info!(lease = %config.name, "lease released"),
            Ok(Err(err)) => tracing::warn!(error = %err, "could not release the lease"),
            Err(_) => tracing::warn!("releasing the lease timed out"),
        }
    }
}

/// One read-plan-write round.
async fn round(
    api: &Api<Lease>,
    config: &LeaseConfig,
    elector: &mut Elector,
) -> Result<Plan, KubeError> {
    let current = api.get_opt(&config.name).await?;
    let observed = current.as_ref().and_then(Observed::from_lease);
    let plan = elector.plan(observed.as_ref(), Instant::now());
    let now = Timestamp::now();
    let written = match &plan {
        Plan::StandBy { .. } => return Ok(plan),
        Plan::Create => {
            let lease = lease(config, None, holder_spec(config, now, 0, Some(now)));
            api.create(&PostParams::default(), &lease).await
        }
        Plan::Claim {
            resource_version,
            transitions,
            takeover,
        } => {
            let acquired = match (takeover, current.as_ref().and_then(|l| l.spec.as_ref())) {
                (false, Some(spec)) => spec.acquire_time.as_ref().map(|t| t.0),
                _ => Some(now),
            };
            let spec = holder_spec(config, now, *transitions, acquired);
            let lease = lease(config, Some(resource_version.clone()), spec);
            api.replace(&config.name, &PostParams::default(), &lease)
                .await
        }
    };
    match written {
        Ok(lease) => {
            elector.claimed(lease.metadata.resource_version, Instant::now());
            if matches!(plan, Plan::Create | Plan::Claim { takeover: true, .. }) {
                tracing::info!(identity = %config.identity, lease = %config.name, "lease acquired");
            }
            Ok(plan)
        }
        // Someone wrote between our read and our write: they won this round.
        Err(KubeError::Api(status)) if status.code == 409 => Ok(Plan::StandBy {
            holder: "another replica".to_owned(),
        }),
        Err(err) => Err(err),
    }
}

/// Gives the lease up: no holder, and a one-second duration.
async fn release(api: &Api<Lease>, config: &LeaseConfig) -> Result<(), KubeError> {
    let Some(current) = api.get_opt(&config.name).await? else {
        return Ok(());
    };
    let ours = current
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        == Some(config.identity.as_str());
    if !ours {
        return Ok(());
    }
    let mut spec = current.spec.clone().unwrap_or_default();
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    let lease = lease(config, current.metadata.resource_version, spec);
    api.replace(&config.name, &PostParams::default(), &lease)
        .await
        .map(drop)
}

fn holder_spec(
    config: &LeaseConfig,
    now: Timestamp,
    transitions: i32,
    acquired: Option<Timestamp>,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(
            i32::try_from(config.timing.duration.as_secs()).unwrap_or(i32::MAX),
        ),
        acquire_time: acquired.map(MicroTime),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

fn lease(config: &LeaseConfig, resource_version: Option<String>, spec: LeaseSpec) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            namespace: Some(config.namespace.clone()),
            resource_version,
            labels: Some(
                [(
                    "app.kubernetes.io/name".to_owned(),
                    "dhi-admission-audit".to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn timing() -> Timing {
        Timing::new(15 * S, 10 * S, 2 * S).unwrap()
    }

    fn held(holder: Option<&str>, version: &str) -> Observed {
        Observed {
            holder: holder.map(str::to_owned),
            resource_version: version.to_owned(),
            duration: Some(15 * S),
            transitions: 3,
        }
    }

    #[test]
    fn timings_that_allow_two_leaders_are_refused() {
        assert!(Timing::new(10 * S, 10 * S, 2 * S).is_err());
        assert!(Timing::new(15 * S, 10 * S, 10 * S).is_err());
        assert!(Timing::new(15 * S, 10 * S, Duration::ZERO).is_err());
        assert!(
            Timing::new(
                Duration::from_millis(500),
                Duration::from_millis(400),
                Duration::from_millis(100)
            )
            .is_err()
        );
    }

    #[test]
    fn no_lease_is_created() {
        let mut a = Elector::new("a".into(), timing());
        assert_eq!(a.plan(None, Instant::now()), Plan::Create);
        assert!(!a.is_leader(Instant::now()));
    }

    #[test]
    fn a_current_lease_of_another_is_left_alone_until_it_expires_on_our_clock() {
        let t0 = Instant::now();
        let mut b = Elector::new("b".into(), timing());
        let lease = held(Some("a"), "10");
        let stand_by = Plan::StandBy { holder: "a".into() };
        assert_eq!(b.plan(Some(&lease), t0), stand_by);
        assert_eq!(b.plan(Some(&lease), t0 + 14 * S), stand_by);
        // The holder renewed (new version) at 14 s: the clock starts again.
        let renewed = held(Some("a"), "11");
        assert_eq!(b.plan(Some(&renewed), t0 + 14 * S), stand_by);
        assert_eq!(b.plan(Some(&renewed), t0 + 28 * S), stand_by);
        // Unchanged for the holder's whole duration: taken over, one more transition.
        assert_eq!(
            b.plan(Some(&renewed), t0 + 29 * S),
            Plan::Claim {
                resource_version: "11".into(),
                transitions: 4,
                takeover: true
            }
        );
        assert!(!b.is_leader(t0 + 29 * S));
        b.claimed(Some("12".into()), t0 + 29 * S);
        assert!(b.is_leader(t0 + 29 * S));
    }

    #[test]
    fn the_holder_renews_and_stops_leading_at_the_renew_deadline() {
        let t0 = Instant::now();
        let mut a = Elector::new("a".into(), timing());
        let lease = held(Some("a"), "7");
        assert_eq!(
            a.plan(Some(&lease), t0),
            Plan::Claim {
                resource_version: "7".into(),
                transitions: 3,
                takeover: false
            }
        );
        a.claimed(Some("8".into()), t0);
        assert!(a.is_leader(t0 + 9 * S));
        // Renewals fail (API server unreachable): leadership ends at 10 s, before anyone
        // else may take over at 15 s.
        assert!(!a.is_leader(t0 + 10 * S));
        assert_eq!(a.leading_until(), Some(t0 + 10 * S));
    }

    #[test]
    fn a_released_lease_is_claimed_at_once() {
        let mut b = Elector::new("b".into(), timing());
        assert_eq!(
            b.plan(Some(&held(None, "20")), Instant::now()),
            Plan::Claim {
                resource_version: "20".into(),
                transitions: 4,
                takeover: true
            }
        );
    }

    #[test]
    fn losing_the_lease_to_another_ends_leadership_at_once() {
        let t0 = Instant::now();
        let mut a = Elector::new("a".into(), timing());
        a.claimed(Some("1".into()), t0);
        assert!(a.is_leader(t0 + S));
        // Someone took it (an operator edited the lease, or we were partitioned).
        assert_eq!(
            a.plan(Some(&held(Some("b"), "2")), t0 + S),
            Plan::StandBy { holder: "b".into() }
        );
        assert!(!a.is_leader(t0 + S));
    }

    #[test]
    fn leases_are_read_by_their_fields() {
        let lease = Lease {
            metadata: ObjectMeta {
                resource_version: Some("5".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                lease_duration_seconds: Some(-3),
                lease_transitions: Some(2),
                ..LeaseSpec::default()
            }),
        };
        assert_eq!(
            Observed::from_lease(&lease),
            Some(Observed {
                holder: None,
                resource_version: "5".into(),
                duration: None,
                transitions: 2
            })
        );
        let unversioned = Lease {
            metadata: ObjectMeta::default(),
            spec: None,
        };
        assert_eq!(Observed::from_lease(&unversioned), None);
    }
}
