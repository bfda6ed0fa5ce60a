//! NIP-29's rules, without I/O: who may post in a group, and what a moderation, join or leave event changes. The
//! relay decides from a copy of the group; the service (`mod.rs`) stores the event and carries the change out.

use super::state::{ADMIN, Group, MODERATOR, tag_value, valid_id};
use crate::protocol::Refusal;
use crate::protocol::VerifiedEvent;
use crate::protocol::filter::{Hash32, parse_hash};

pub const PUT_USER: u16 = 9000;
pub const REMOVE_USER: u16 = 9001;
pub const EDIT_METADATA: u16 = 9002;
pub const DELETE_EVENT: u16 = 9005;
pub const CREATE_GROUP: u16 = 9007;
pub const DELETE_GROUP: u16 = 9008;
pub const CREATE_INVITE: u16 = 9009;
pub const JOIN: u16 = 9021;
pub const LEAVE: u16 = 9022;

/// Roles one member holds at most.
const MAX_ROLES: usize = 8;

/// Invite codes one group keeps at most.
pub const MAX_INVITES: usize = 1000;

/// Whether a kind is one the relay acts on (moderation 9000-9020, join, leave) rather than a post.
pub fn is_action(kind: u16) -> bool {
    (PUT_USER..=9020).contains(&kind) || kind == JOIN || kind == LEAVE
}

/// What the rules need besides the group and the event.
pub struct Context<'a> {
    /// The relay's own pubkey, which may do anything in any group.
    pub relay: &'a Hash32,
    /// Who may create groups; empty: anyone.
    pub creators: &'a [Hash32],
    /// Groups the event's author created so far, and the most one may.
    pub created_by_author: usize,
    pub max_groups_per_creator: usize,
    /// Groups hosted (and deleted ids kept), and the most the relay keeps.
    pub groups: usize,
    pub max_groups: usize,
    pub max_members: usize,
    pub late_publication_secs: u64,
    pub now: u64,
}

/// What an accepted action does, once the event itself is stored.
#[derive(Debug, Default)]
pub struct Change {
    /// The group as it is after the action.
    pub group: Group,
    /// The action created it.
    pub created: bool,
    /// Members the relay adds or removes in its own name (kind 9000 for a join, 9001 for a leave).
    pub put: Option<Hash32>,
    pub removed: Option<Hash32>,
    /// Events to remove (`delete-event`).
    pub delete_events: Vec<Hash32>,
    /// The group ends (`delete-group`).
    pub delete_group: bool,
    /// Stored, but answered `OK false` with this: a join request to a closed group, kept for its admins.
    pub pending: Option<Refusal>,
}

/// Checks what every event in a group must satisfy: recent enough, and its `previous` tags naming events of the
/// group the relay has.
pub fn check_timeline(group: &Group, event: &VerifiedEvent, ctx: &Context) -> Result<(), Refusal> {
    if event.created_at().saturating_add(ctx.late_publication_secs) < ctx.now {
        return Err(Refusal::invalid("too old for a group event (NIP-29 late publication)"));
    }
    for tag in event.event.tags.iter().map(|t| t.as_slice()).filter(|t| t[0] == "previous") {
        if let Some(prefix) = tag[1..].iter().find(|prefix| !group.knows_prefix(prefix)) {
            return Err(Refusal::invalid(format!("previous tag {prefix:?} names no recent event of this group here")));
        }
    }
    Ok(())
}

/// A post (any kind but the actions) in a hosted group: only its members may.
pub fn check_post(group: &Group, event: &VerifiedEvent, ctx: &Context) -> Result<(), Refusal> {
    if event.pubkey() != ctx.relay && !group.is_member(event.pubkey()) {
        let id = &group.id;
        return Err(Refusal::restricted(format!(
            "only members of group {id} may post in it; ask to join with kind 9021"
        )));
    }
    if group.removed.contains(event.id()) {
        return Err(Refusal::blocked("a moderator of this group deleted this event"));
    }
    check_timeline(group, event, ctx)
}

/// Creating a group: `current` is the group of that id if there is one (or was: a deleted id stays taken).
pub fn create(
    current: Option<&Group>,
    taken: bool,
    id: &str,
    event: &VerifiedEvent,
    ctx: &Context,
) -> Result<Change, Refusal> {
    if !valid_id(id) {
        return Err(Refusal::invalid("a group id is 1 to 64 characters of a-z, 0-9, - and _"));
    }
    if current.is_some() || taken {
        return Err(Refusal::duplicate(format!("group {id} already exists here (or did)")));
    }
    let author = event.pubkey();
    if author != ctx.relay && !ctx.creators.is_empty() && !ctx.creators.contains(author) {
        return Err(Refusal::restricted("this relay lets only some pubkeys create groups"));
    }
    if ctx.groups >= ctx.max_groups {
        return Err(Refusal::rate_limited(format!("this relay hosts as many groups as it will ({})", ctx.max_groups)));
    }
    if ctx.created_by_author >= ctx.max_groups_per_creator {
        return Err(Refusal::rate_limited(format!("a pubkey may create {} groups here", ctx.max_groups_per_creator)));
    }
    let mut group = Group::new(id);
    edit(&mut group, event);
    group.members.insert(*author, vec![ADMIN.to_owned()]);
    Ok(Change { group, created: true, ..Change::default() })
}

/// A join, leave or moderation event in an existing group.
pub fn act(current: &Group, event: &VerifiedEvent, ctx: &Context) -> Result<Change, Refusal> {
    check_timeline(current, event, ctx)?;
    let author = *event.pubkey();
    let mut change = Change { group: current.clone(), ..Change::default() };
    let group = &mut change.group;
    match event.kind() {
        JOIN => {
            if group.is_member(&author) {
                return Err(Refusal::duplicate("already a member of this group"));
            }
            if group.members.len() >= ctx.max_members {
                return Err(Refusal::restricted(format!("group is full ({} members)", ctx.max_members)));
            }
            // A code admits one join: read by others in a public group's join requests, it admits no one else.
            let invited = tag_value(event, "code").is_some_and(|code| group.invites.remove(code));
            if group.closed && !invited {
                change.pending =
                    Some(Refusal::restricted("this group is closed; your request awaits an admin's approval"));
                return Ok(change);
            }
            group.members.insert(author, Vec::new());
            change.put = Some(author);
        }
        LEAVE => {
            if group.members.remove(&author).is_none() {
                return Err(Refusal::invalid("not a member of this group"));
            }
            change.removed = Some(author);
        }
        kind => moderate(&mut change, kind, event, ctx)?,
    }
    Ok(change)
}

/// Moderation (9000-9020) by the relay, an admin, or within a moderator's rights.
fn moderate(change: &mut Change, kind: u16, event: &VerifiedEvent, ctx: &Context) -> Result<(), Refusal> {
    let author = event.pubkey();
    let group = &mut change.group;
    let admin = author == ctx.relay || group.has_role(author, ADMIN);
    let moderator = admin || group.has_role(author, MODERATOR);
    let refuse = || Err(Refusal::restricted("your roles in this group do not allow this"));
    let users = || -> Result<Vec<(Hash32, Vec<String>)>, Refusal> {
        let users: Vec<_> = event
            .event
            .tags
            .iter()
            .map(|t| t.as_slice())
            .filter(|t| t[0] == "p")
            .map(|t| t.get(1).and_then(|p| parse_hash(p)).map(|p| (p, t[2..].to_vec())))
            .collect::<Option<_>>()
            .ok_or_else(|| Refusal::invalid("a p tag needs a 64-digit hex pubkey"))?;
        if users.is_empty() { Err(Refusal::invalid("name the users in p tags")) } else { Ok(users) }
    };
    match kind {
        PUT_USER => {
            for (user, roles) in users()? {
                if roles.len() > MAX_ROLES || roles.iter().any(|role| role.is_empty() || role.len() > 64) {
                    return Err(Refusal::invalid(format!("at most {MAX_ROLES} roles, each 1 to 64 bytes")));
                }
                // A moderator adds plain members and leaves roles alone.
                if !moderator || (!admin && (!roles.is_empty() || group.roles_of(&user).is_some_and(|r| !r.is_empty())))
                {
                    return refuse();
                }
                if !group.is_member(&user) && group.members.len() >= ctx.max_members {
                    return Err(Refusal::restricted(format!("group is full ({} members)", ctx.max_members)));
                }
                group.members.insert(user, roles);
            }
        }
        REMOVE_USER => {
            for (user, _) in users()? {
                if !moderator || (!admin && group.roles_of(&user).is_some_and(|r| !r.is_empty())) {
                    return refuse();
                }
                group.members.remove(&user);
            }
        }
        EDIT_METADATA if admin => edit(group, event),
        DELETE_EVENT if moderator => {
            change.delete_events = event
                .event
                .tags
                .iter()
                .map(|t| t.as_slice())
                .filter(|t| t[0] == "e")
                .filter_map(|t| parse_hash(t.get(1)?))
                .collect();
            if change.delete_events.is_empty() {
                return Err(Refusal::invalid("name the events to delete in e tags"));
            }
            change.delete_events.iter().for_each(|id| group.forbid(id));
        }
        DELETE_GROUP if admin => change.delete_group = true,
        CREATE_INVITE if moderator => {
            let code = tag_value(event, "code").filter(|code| !code.is_empty() && code.len() <= 256);
            let code = code.ok_or_else(|| Refusal::invalid("an invite needs a code tag (1 to 256 bytes)"))?;
            if group.invites.len() >= MAX_INVITES && !group.invites.contains(code) {
                return Err(Refusal::rate_limited(format!("a group keeps at most {MAX_INVITES} invite codes")));
            }
            group.invites.insert(code.to_owned());
        }
        CREATE_GROUP => return Err(Refusal::duplicate(format!("group {} already exists here", group.id))),
        // The other kinds of the range: kept when an admin sends them, with no effect here.
        _ if admin && !matches!(kind, EDIT_METADATA | DELETE_EVENT | DELETE_GROUP | CREATE_INVITE) => {}
        _ => return refuse(),
    }
    Ok(())
}

/// `edit-metadata` (and the tags of `create-group`): the fields named change; a flag is set by its tag (`private`,
/// `closed`, `hidden`) and cleared by its opposite (`public`, `open`, `visible`).
fn edit(group: &mut Group, event: &VerifiedEvent) {
    for tag in event.event.tags.iter().map(|t| t.as_slice()) {
        let value = tag.get(1).map(|v| v.chars().take(1024).collect::<String>());
        match (tag[0].as_str(), value) {
            ("name", Some(v)) => group.name = v,
            ("picture", Some(v)) => group.picture = v,
            ("about", Some(v)) => group.about = v,
            ("private", _) => group.private = true,
            ("public", _) => group.private = false,
            ("closed", _) => group.closed = true,
            ("open", _) => group.closed = false,
            ("hidden", _) => group.hidden = true,
            ("visible", _) => group.hidden = false,
            _ => {}
        }
    }
}
