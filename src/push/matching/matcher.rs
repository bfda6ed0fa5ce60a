//! From an accepted event to push jobs: one per device whose registration matches, never two for one event.

use super::push_job::{CALLBACK_PREFIX, PushJob};
use crate::hooks::ReadGate;
use crate::protocol::VerifiedEvent;
use crate::push::audience::callback_index::CallbackIndex;
use crate::push::audience::mutes::MuteLists;
use crate::push::audience::registry::Registry;
use crate::push::text::Summary;
use crate::store::db_time;
use crate::store::jobs::NewJob;

/// What decides whether an event is pushed, and to whom.
pub struct Matcher<'a> {
    pub registry: &'a Registry,
    pub mutes: &'a MuteLists,
    /// NIP-9a subscriptions, which only events accepted here reach.
    pub callbacks: &'a CallbackIndex,
    /// Events older than this many seconds are not pushed.
    pub max_event_age_secs: u64,
    /// Kinds served only to their parties (`[auth] read_restricted_kinds`): a push is a read, so these notify only
    /// registrations whose pubkey is a party.
    pub read_restricted_kinds: &'a [u16],
    /// `[push] max_mentions` when `suppress_hellthreads` is on: NIP-9a filters by `#p` are spared events tagging more.
    pub spare_hellthreads: Option<usize>,
    /// Who may read beyond the kinds' rule (NIP-29 private groups): asked for each pubkey about to be notified.
    pub gate: Option<&'a dyn ReadGate>,
}

impl Matcher<'_> {
    /// The jobs an event causes now: one per matching device (README, "Push delivery") whose pubkey did not mute it, keyed
    /// by the event id and the device's address (its token or endpoint, whichever protocol registered it), so that
    /// the same event, seen again (a retry, or from a watched relay) or matching one device through two protocols,
    /// never causes a second job.
    pub fn jobs_for(&self, event: &VerifiedEvent, now: i64) -> Vec<NewJob> {
        if self.too_old(event, now) {
            return Vec::new();
        }
        let mut jobs: Vec<NewJob> = Vec::new();
        let mut summary = None;
        let restricted = self.read_restricted_kinds.contains(&event.kind());
        let registrations = self.registry.matching(event, now);
        // The addresses already given a job: a set, as a group message matches thousands of devices.
        let mut addresses = std::collections::HashSet::with_capacity(registrations.len());
        for registration in &registrations {
            let address = registration.address();
            if addresses.contains(&address)
                || !self.may_read(restricted, &registration.pubkey, event)
                || self.mutes.silences(&registration.pubkey, event)
            {
                continue;
            }
            let dedup_key = format!("push:{}:{address}", event.event.id.to_hex());
            addresses.insert(address);
            let job = PushJob {
                device_id: registration.device_id.clone(),
                pubkey: hex::encode(registration.pubkey),
                event_id: event.event.id.to_hex(),
                kind: event.kind(),
                author: event.event.pubkey.to_hex(),
                summary: summary.get_or_insert_with(|| Summary::of(event)).clone(),
                event: crate::push::device::is_nip97(&registration.device_id).then(|| event.json.to_string()),
                test: false,
            };
            let service = registration.platform;
            metrics::counter!(crate::metrics::PUSH_JOBS, "service" => service, "outcome" => "queued").increment(1);
            jobs.push(NewJob {
                dedup_key,
                group_key: job.device_id.clone(),
                payload: serde_json::to_string(&job).expect("a job serializes"),
            });
        }
        jobs
    }

    /// The jobs of an event accepted here (stored or ephemeral): the registrations' (`jobs_for`), then one per
    /// NIP-9a callback whose subscription wants it. Events from watched relays never reach callbacks.
    pub fn jobs_for_accepted(&self, event: &VerifiedEvent, now: i64) -> Vec<NewJob> {
        let mut jobs = self.jobs_for(event, now);
        if !self.too_old(event, now) && !self.callbacks.is_empty() {
            self.callback_jobs(event, now, &mut jobs);
        }
        jobs
    }

    /// A push is a read: the pubkey must be a party to an event of a restricted kind, and the gate must let it read.
    fn may_read(&self, restricted: bool, pubkey: &[u8; 32], event: &VerifiedEvent) -> bool {
        (!restricted || event.is_party(pubkey)) && self.gate.is_none_or(|gate| gate.may_read(pubkey, event))
    }

    fn too_old(&self, event: &VerifiedEvent, now: i64) -> bool {
        now.saturating_sub(db_time(event.created_at())) > db_time(self.max_event_age_secs)
    }

    /// One job per callback (two subscriptions posting to one callback get one POST), under the same read gating
    /// and mute lists as registrations: a subscriber never hears of an event it may not read. At most
    /// `[push] max_callbacks_per_host` callbacks on one host: 300 subscriptions from throwaway keys, each a path on
    /// one host, once made one note 300 POSTs there.
    fn callback_jobs(&self, event: &VerifiedEvent, now: i64, jobs: &mut Vec<NewJob>) {
        let mut per_host: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let max_per_host = self.callbacks.max_per_host();
        let restricted = self.read_restricted_kinds.contains(&event.kind());
        let spare = self.spare_hellthreads.is_some_and(|max| {
            let mentioned: std::collections::HashSet<&str> =
                event.indexed_tags().filter(|(letter, _)| *letter == 'p').map(|(_, value)| value).collect();
            mentioned.len() > max
        });
        for subscription in self.callbacks.matching(event, now.max(0) as u64, spare) {
            let group_key = format!("{CALLBACK_PREFIX}{}", subscription.callback);
            if jobs.iter().any(|job| job.group_key == group_key)
                || !self.may_read(restricted, &subscription.pubkey, event)
                || self.mutes.silences(&subscription.pubkey, event)
            {
                continue;
            }
            let posts = per_host.entry(host_of(&subscription.callback)).or_default();
            if *posts >= max_per_host {
                metrics::counter!(crate::metrics::PUSH_JOBS, "service" => "callback", "outcome" => "dropped", "reason" => "host_cap")
                    .increment(1);
                continue;
            }
            *posts += 1;
            let job = PushJob {
                device_id: group_key.clone(),
                pubkey: hex::encode(subscription.pubkey),
                event_id: event.event.id.to_hex(),
                kind: event.kind(),
                author: event.event.pubkey.to_hex(),
                summary: Summary::default(),
                event: subscription.include_event.then(|| event.json.to_string()),
                test: false,
            };
            metrics::counter!(crate::metrics::PUSH_JOBS, "service" => "callback", "outcome" => "queued").increment(1);
            jobs.push(NewJob {
                dedup_key: format!("push:{}:callback:{}", job.event_id, subscription.callback),
                group_key,
                payload: serde_json::to_string(&job).expect("a job serializes"),
            });
        }
    }
}

/// The host a callback URL POSTs to (the whole URL when it has none: `nip9a::parse` refused those).
fn host_of(callback: &str) -> String {
    url::Url::parse(callback)
        .ok()
        .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_else(|| callback.to_owned())
}
