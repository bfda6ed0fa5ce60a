//! NIP-29 relay-based groups hosted here: the groups' state in memory, the check of every event `h`-tagged with a
//! hosted group, the actions (create, join, leave, moderation) carried out in the relay's name, and who may read
//! what (the relay's readers, and push through `hooks::ReadGate`).
//!
//! The relay-signed metadata events (39000 metadata, 39001 admins, 39002 members, 39003 roles) are the state's
//! durable form: every change writes all four, and they are read back at start and when another node on the same
//! PostgreSQL database wrote them (`AcceptListener`). Actions run one at a time on a node (`acting`), so that two
//! changes to one group cannot both start from the same state.

pub mod rules;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use nostr::prelude::*;

use crate::clock::Clock;
use crate::config::GroupsConfig;
use crate::hooks::ReadGate;
use crate::protocol::Refusal;
use crate::protocol::filter::{Hash32, parse_hash};
use crate::protocol::{Filter, SharedEvent, VerifiedEvent};
use crate::store::writer::{AcceptListener, Writer};
use crate::store::{EventStore, StoreError, Visibility, WriteOutcome};
use rules::{CREATE_GROUP, CREATE_INVITE, Change, Context, DELETE_GROUP, PUT_USER, REMOVE_USER};
use state::{ADMINS_KIND, Group, MEMBERS_KIND, METADATA_KIND, ROLES_KIND, tag_value};

/// NIP-09, with which the relay withdraws a deleted group's metadata.
const DELETION_KIND: u16 = 5;

/// What became of a group event the relay took over.
#[derive(Debug)]
pub enum Verdict {
    Refused(Refusal),
    /// Stored, and answered `OK false` with this (a join request waiting for an admin).
    Pending(Refusal),
    Written(Result<WriteOutcome, StoreError>),
}

#[derive(Default)]
struct Registry {
    groups: HashMap<String, Group>,
    /// Ids of deleted groups: they stay taken, and nobody posts in them.
    deleted: HashSet<String>,
    /// How many groups each pubkey created.
    created_by: HashMap<Hash32, usize>,
    /// Ids of the private and hidden groups: what each query's visibility is computed from, without a walk over
    /// every group.
    gated: HashSet<String>,
}

impl Registry {
    /// Puts a group in (or back), keeping `gated` true to it.
    fn put(&mut self, group: Group) {
        if group.private || group.hidden {
            self.gated.insert(group.id.clone());
        } else {
            self.gated.remove(&group.id);
        }
        self.groups.insert(group.id.clone(), group);
    }

    fn delete(&mut self, id: &str) {
        self.forget(id);
        self.deleted.insert(id.to_owned());
    }

    fn forget(&mut self, id: &str) {
        self.groups.remove(id);
        self.gated.remove(id);
    }
}

pub struct Groups {
    registry: RwLock<Registry>,
    keys: Keys,
    relay: Hash32,
    config: GroupsConfig,
    creators: Vec<Hash32>,
    clock: Clock,
    acting: tokio::sync::Mutex<()>,
}

impl Groups {
    /// The groups as the stored events say, signed with `keys` (the relay's own).
    pub async fn load(
        config: &GroupsConfig,
        keys: Keys,
        store: &Arc<dyn EventStore>,
        clock: Clock,
    ) -> Result<Arc<Self>, StoreError> {
        let relay = keys.public_key().to_bytes();
        let groups = Arc::new(Self {
            registry: RwLock::default(),
            relay,
            creators: config.creators.iter().filter_map(|p| parse_hash(p)).collect(),
            config: config.clone(),
            keys,
            clock,
            acting: tokio::sync::Mutex::default(),
        });
        let read = |filter: Filter| async move {
            let stored = store.query(&[filter], Visibility::default(), usize::MAX).await?;
            let events = stored.iter().rev().filter_map(|e| VerifiedEvent::from_stored(&e.json)).map(Arc::new);
            Ok::<_, StoreError>(events.collect::<Vec<SharedEvent>>())
        };
        let by_relay = |kinds: Vec<u16>| Filter { authors: Some(vec![relay]), kinds: Some(kinds), ..Filter::default() };
        let of_kind = |kind: u16| Filter { kinds: Some(vec![kind]), ..Filter::default() };
        // Members before admins: the admins event gives roles to members the members event lists.
        for kinds in [vec![METADATA_KIND, MEMBERS_KIND], vec![ADMINS_KIND]] {
            groups.accepted(&read(by_relay(kinds)).await?);
        }
        // Invites, then the joins that used them up (a code admits one join).
        for kind in [CREATE_GROUP, DELETE_GROUP, CREATE_INVITE, rules::JOIN] {
            groups.accepted(&read(of_kind(kind)).await?);
        }
        let ids: Vec<String> = groups.registry.read().expect("groups lock").groups.keys().cloned().collect();
        for id in ids {
            let recent = Filter { tags: [('h', vec![id])].into(), limit: Some(500), ..Filter::default() };
            let events = read(recent).await?;
            let mut registry = groups.registry.write().expect("groups lock");
            for event in events {
                let id = event.group().unwrap_or_default();
                registry.groups.get_mut(id).into_iter().for_each(|group| group.saw(event.id()));
            }
        }
        Ok(groups)
    }

    pub fn public_key(&self) -> Hash32 {
        self.relay
    }

    /// The answer to an event that concerns groups here, or None when the relay's usual path applies: metadata
    /// kinds are the relay's own; a post in a hosted group needs a member; an action is checked, stored and carried
    /// out. Events naming a group not hosted here are ordinary events.
    pub async fn handle(&self, event: &SharedEvent, writer: &Writer, store: &Arc<dyn EventStore>) -> Option<Verdict> {
        let kind = event.kind();
        if (METADATA_KIND..=ROLES_KIND).contains(&kind) {
            let reason = Refusal::restricted("group metadata (kinds 39000-39003) is written by the relay itself");
            return (event.pubkey() != &self.relay).then_some(Verdict::Refused(reason));
        }
        let id = event.group()?.to_owned();
        if let Some(reason) = self.several_groups(event) {
            return Some(Verdict::Refused(reason));
        }
        if !rules::is_action(kind) {
            let registry = self.registry.read().expect("groups lock");
            if registry.deleted.contains(&id) {
                return Some(Verdict::Refused(Refusal::blocked(format!("group {id} was deleted"))));
            }
            let group = registry.groups.get(&id)?;
            return rules::check_post(group, event, &self.context(&registry, event)).err().map(Verdict::Refused);
        }
        let _turn = self.acting.lock().await;
        let change = {
            let registry = self.registry.read().expect("groups lock");
            let ctx = self.context(&registry, event);
            match (kind, registry.groups.get(&id)) {
                (CREATE_GROUP, current) => rules::create(current, registry.deleted.contains(&id), &id, event, &ctx),
                (_, Some(group)) => rules::act(group, event, &ctx),
                (_, None) if registry.deleted.contains(&id) => Err(Refusal::blocked(format!("group {id} was deleted"))),
                (_, None) => Err(Refusal::invalid(format!("there is no group {id} on this relay"))),
            }
        };
        let change = match change {
            Ok(change) => change,
            Err(reason) => return Some(Verdict::Refused(reason)),
        };
        if kind == CREATE_GROUP {
            if let Some(reason) = self.taken_elsewhere(&id, store).await {
                return Some(Verdict::Refused(reason));
            }
            // In force before its creation is stored: a private group's first event is already its own.
            self.registry.write().expect("groups lock").put(change.group.clone());
        }
        match writer.write(event.clone()).await {
            Ok(WriteOutcome::Stored) => {}
            other => {
                if kind == CREATE_GROUP {
                    self.registry.write().expect("groups lock").forget(&id);
                }
                return Some(Verdict::Written(other));
            }
        }
        if let Some(reason) = change.pending {
            return Some(Verdict::Pending(reason));
        }
        self.carry_out(change, writer, store).await;
        Some(Verdict::Written(Ok(WriteOutcome::Stored)))
    }

    /// A new group's id that stored events already name (posted before it existed, or a group of another relay):
    /// they would become the group's.
    async fn taken_elsewhere(&self, id: &str, store: &Arc<dyn EventStore>) -> Option<Refusal> {
        let named = Filter { tags: [('h', vec![id.to_owned()])].into(), limit: Some(1), ..Filter::default() };
        match store.query(&[named], Visibility::default(), usize::MAX).await {
            Ok(found) if found.is_empty() => None,
            Ok(_) => Some(Refusal::duplicate(format!("events here already name group {id}; pick another id"))),
            Err(_) => Some(Refusal::error("could not check the group id")),
        }
    }

    /// An event naming a group here and another group in its `h` tags is refused: otherwise a member of one group
    /// could post into another (a private one, say) that checks only its first `h`.
    fn several_groups(&self, event: &VerifiedEvent) -> Option<Refusal> {
        let mut named: Vec<&str> = event.indexed_tags().filter(|(letter, _)| *letter == 'h').map(|(_, v)| v).collect();
        named.sort_unstable();
        named.dedup();
        let registry = self.registry.read().expect("groups lock");
        let ours = |id: &&str| registry.groups.contains_key(*id) || registry.deleted.contains(*id);
        (named.len() > 1 && named.iter().any(ours))
            .then(|| Refusal::invalid("an event belongs to one group; this one has several h tags"))
    }

    fn context<'a>(&'a self, registry: &Registry, event: &VerifiedEvent) -> Context<'a> {
        Context {
            relay: &self.relay,
            creators: &self.creators,
            created_by_author: registry.created_by.get(event.pubkey()).copied().unwrap_or(0),
            groups: registry.groups.len() + registry.deleted.len(),
            max_groups: self.config.max_groups,
            max_groups_per_creator: self.config.max_groups_per_creator,
            max_members: self.config.max_members,
            late_publication_secs: self.config.late_publication_secs,
            now: self.clock.secs(),
        }
    }

    /// After the action's event is stored: the group's new state, the relay's own events (a join's 9000, a
    /// leave's 9001, the four metadata events, or the withdrawal of a deleted group's), removed events.
    async fn carry_out(&self, change: Change, writer: &Writer, store: &Arc<dyn EventStore>) {
        let mut group = change.group;
        let id = group.id.clone();
        let now = self.clock.secs();
        let mut own = Vec::new();
        for (kind, user) in [(PUT_USER, change.put), (REMOVE_USER, change.removed)] {
            if let Some(user) = user {
                own.push(self.sign(kind, vec![vec!["h".into(), id.clone()], vec!["p".into(), hex::encode(user)]], now));
            }
        }
        if !change.delete_events.is_empty() {
            let filter =
                Filter { ids: Some(change.delete_events), tags: [('h', vec![id.clone()])].into(), ..Filter::default() };
            remove_matching(store, filter).await;
        }
        let current = self.registry.read().expect("groups lock").groups.get(&id).cloned();
        if change.delete_group {
            self.registry.write().expect("groups lock").delete(&id);
            let relay = hex::encode(self.relay);
            let addresses = (METADATA_KIND..=ROLES_KIND).map(|kind| vec!["a".into(), format!("{kind}:{relay}:{id}")]);
            // No earlier than the metadata it withdraws, which may be dated ahead of the clock.
            own.push(self.sign(DELETION_KIND, addresses.collect(), now.max(group.written_at)));
            // Its events go with it: nothing would gate a private group's events any more.
            remove_matching(store, Filter { tags: [('h', vec![id])].into(), ..Filter::default() }).await;
        } else {
            // Metadata events only when what they say changed (a deleted event changes none of it).
            if change.created || current.is_none_or(|current| !current.same_state(&group)) {
                group.written_at = now.max(group.written_at + 1);
                for (kind, tags) in group.metadata_tags() {
                    own.push(self.sign(kind, tags, group.written_at));
                }
            }
            let mut registry = self.registry.write().expect("groups lock");
            let recent = registry.groups.get_mut(&id).map(|g| std::mem::take(&mut g.recent)).unwrap_or_default();
            registry.put(Group { recent, ..group });
        }
        // One after another, each awaited: the commit delay would hold each back behind the one before.
        for event in own {
            if let Err(e) = writer.write_awaited(event).await {
                tracing::error!("a group event of the relay's own could not be stored: {e}");
            }
        }
    }

    fn sign(&self, kind: u16, tags: Vec<Vec<String>>, created_at: u64) -> SharedEvent {
        let tags = tags.into_iter().map(|tag| Tag::parse(tag).expect("the relay's tags are not empty"));
        let event = EventBuilder::new(Kind::Custom(kind), "")
            .tags(tags)
            .custom_created_at(Timestamp::from_secs(created_at))
            .finalize(&self.keys)
            .expect("signing with the relay's key");
        Arc::new(VerifiedEvent::new(event))
    }

    /// Whether one of `readers` (authenticated pubkeys) may read the event, as far as groups say.
    pub fn may_read(&self, readers: &[Hash32], event: &VerifiedEvent) -> bool {
        let registry = self.registry.read().expect("groups lock");
        if registry.gated.is_empty() && registry.deleted.is_empty() {
            return true;
        }
        if (METADATA_KIND..=ROLES_KIND).contains(&event.kind()) {
            let id = event.d_tag();
            if registry.deleted.contains(id) {
                return false;
            }
            if let Some(group) = registry.groups.get(id) {
                return group.metadata_readable_by(readers);
            }
        }
        match event.group() {
            Some(id) if registry.deleted.contains(id) => false,
            Some(id) => registry.groups.get(id).is_none_or(|group| group.readable_by(readers)),
            None => true,
        }
    }

    /// Whether an event is one groups here decide on (metadata kinds, anything naming a hosted or deleted group):
    /// such an event from a watched relay is not stored, since it did not take the group's checks.
    pub fn concerns(&self, event: &VerifiedEvent) -> bool {
        let registry = self.registry.read().expect("groups lock");
        (METADATA_KIND..=ROLES_KIND).contains(&event.kind())
            || event.indexed_tags().any(|(letter, id)| {
                letter == 'h' && (registry.groups.contains_key(id) || registry.deleted.contains(id))
            })
    }

    /// The store's form of `may_read`: the private groups whose events `readers` may not see, and the groups whose
    /// metadata they may not see.
    pub fn hidden_for(&self, readers: &[Hash32]) -> (Vec<String>, Vec<String>) {
        let registry = self.registry.read().expect("groups lock");
        let (mut events, mut metadata) = (Vec::new(), Vec::new());
        for group in registry.gated.iter().filter_map(|id| registry.groups.get(id)) {
            if !group.readable_by(readers) {
                events.push(group.id.clone());
            }
            if !group.metadata_readable_by(readers) {
                metadata.push(group.id.clone());
            }
        }
        // A deleted group's events are being removed, or were: nobody reads what is left.
        events.extend(registry.deleted.iter().cloned());
        metadata.extend(registry.deleted.iter().cloned());
        (events, metadata)
    }

    /// A private group a filter asks for by `#h`, if there is one: a reader that has not authenticated is told to.
    pub fn private_group_in(&self, filter: &Filter) -> Option<String> {
        let registry = self.registry.read().expect("groups lock");
        let mut asked = filter.tags.get(&'h').into_iter().chain(filter.tags.get(&'d')).flatten();
        asked.find(|id| registry.groups.get(*id).is_some_and(|g| g.private)).cloned()
    }
}

/// Removes the stored events a filter matches, in rounds of 500.
async fn remove_matching(store: &Arc<dyn EventStore>, filter: Filter) {
    let filter = Filter { limit: Some(500), ..filter };
    for _ in 0..1000 {
        let found = match store.query(std::slice::from_ref(&filter), Visibility::default(), usize::MAX).await {
            Ok(found) => found,
            Err(e) => return tracing::error!("cannot read a group's events to remove them: {e}"),
        };
        let mut removed = 0;
        for event in &found {
            // The deletion itself stays: it says, after a restart, that the group is gone.
            if VerifiedEvent::from_stored(&event.json).is_some_and(|e| e.kind() == DELETE_GROUP) {
                continue;
            }
            match store.remove_event(&event.id).await {
                Ok(_) => removed += 1,
                Err(e) => return tracing::error!("cannot remove a group's event: {e}"),
            }
        }
        if removed == 0 {
            return;
        }
    }
}

impl AcceptListener for Groups {
    /// Follows what was stored, here or on another node: the relay's metadata events, creations (counted per
    /// creator), deletions and invites by those whose roles allow them, joins that used an invite code, and each
    /// group's recent ids.
    fn accepted(&self, events: &[SharedEvent]) {
        let relevant = |e: &&SharedEvent| (METADATA_KIND..=ROLES_KIND).contains(&e.kind()) || e.group().is_some();
        if !events.iter().any(|e| relevant(&e)) {
            return;
        }
        let mut registry = self.registry.write().expect("groups lock");
        for event in events.iter().filter(relevant) {
            self.follow(&mut registry, event);
        }
    }
}

impl Groups {
    fn follow(&self, registry: &mut Registry, event: &VerifiedEvent) {
        let author = event.pubkey();
        let may = |group: Option<&Group>, roles: &[&str]| {
            author == &self.relay || group.is_some_and(|g| roles.iter().any(|role| g.has_role(author, role)))
        };
        match (event.kind(), event.group()) {
            (METADATA_KIND..=ROLES_KIND, _) if author == &self.relay => {
                let id = event.d_tag();
                if !registry.deleted.contains(id) {
                    let mut group = registry.groups.remove(id).unwrap_or_else(|| Group::new(id));
                    group.apply_metadata(event);
                    registry.put(group);
                }
            }
            (CREATE_GROUP, Some(_)) => *registry.created_by.entry(*author).or_default() += 1,
            // (At start a deleted group has no metadata left to check roles in: its deletion stands.)
            (DELETE_GROUP, Some(id))
                if may(registry.groups.get(id), &[state::ADMIN]) || !registry.groups.contains_key(id) =>
            {
                registry.delete(id)
            }
            (CREATE_INVITE, Some(id)) if may(registry.groups.get(id), &[state::ADMIN, state::MODERATOR]) => {
                if let (Some(group), Some(code)) = (registry.groups.get_mut(id), tag_value(event, "code")) {
                    group.invites.insert(code.to_owned());
                }
            }
            (rules::JOIN, Some(id)) => {
                if let (Some(group), Some(code)) = (registry.groups.get_mut(id), tag_value(event, "code")) {
                    group.invites.remove(code);
                }
            }
            _ => {}
        }
        if let Some(group) = event.group().and_then(|id| registry.groups.get_mut(id)) {
            group.saw(event.id());
        }
    }
}

impl ReadGate for Groups {
    fn may_read(&self, pubkey: &Hash32, event: &VerifiedEvent) -> bool {
        Groups::may_read(self, std::slice::from_ref(pubkey), event)
    }
}
