//! Which tor of a bridge fleet takes a transport's next connection.
//!
//! A busy bridge runs several tor processes with one identity behind one
//! pluggable-transport server; `onionlb bridge extor` sits between the two
//! and hands each connection to one tor's Extended ORPort. This module is
//! its policy, without I/O or clock: the shell reports connections opened
//! and closed, health checks and dials, and asks [`Pool::pick`] where the
//! next connection goes.
//!
//! Rules:
//! * A drained member takes no new connection (those it has keep running);
//!   nor does a member that is down.
//! * Down after [`FALL`] failures in a row (a health check or a dial), up
//!   again after [`RISE`] successes in a row: one lost check does not move
//!   traffic, and a tor that restarts is back within two checks. With the
//!   shell's one-second checks a dead tor is out within about two seconds,
//!   and a dial that fails sooner counts at once.
//! * [`Strategy::LeastConnections`] takes the member with the fewest open
//!   connections (ties to the one listed first), as HAProxy's `leastconn`.
//!   [`Strategy::UserAddress`] keeps a client's IP address on one member
//!   while that member can take it (rendezvous hashing: a member leaving
//!   moves only its own clients, and they come back when it returns), for
//!   operators who want a client's connections on one tor.
//! * If every member is down but some are not drained, the pick still
//!   tries those: health checks can be wrong, and a refused connection is
//!   no worse than one never tried.
//!
//! [`KeyAgreement`] is the other half of keeping a fleet one bridge: its
//! members must hold the same identity and onion keys, or a client that
//! learned one member's onion key stalls on another.

use std::net::IpAddr;

use sha2::{Digest as _, Sha256};

/// Failures in a row that take a member down.
pub const FALL: u32 = 2;
/// Successes in a row that bring a down member back.
pub const RISE: u32 = 2;

/// How [`Pool::pick`] chooses among the members that can take a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// The member with the fewest open connections.
    #[default]
    LeastConnections,
    /// The same member for the same client IP address while it can serve.
    UserAddress,
}

/// A change in a member's health, for the shell to log and count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// It went down: no new connections until it recovers.
    Down,
    /// It came back up.
    Up,
}

/// What the pool knows of one tor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    name: String,
    open: u64,
    up: bool,
    drained: bool,
    failures: u32,
    successes: u32,
}

impl Member {
    /// The name the operator gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connections to it that are open now.
    pub fn open(&self) -> u64 {
        self.open
    }

    /// Whether its checks say it serves.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Whether the operator drained it.
    pub fn is_drained(&self) -> bool {
        self.drained
    }
}

/// The members of one bridge fleet and their state.
#[derive(Clone, Debug)]
pub struct Pool {
    members: Vec<Member>,
    strategy: Strategy,
}

impl Pool {
    /// A pool of the named members, each up (until checks say otherwise)
    /// and not drained.
    pub fn new<I, S>(names: I, strategy: Strategy) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let members = names
            .into_iter()
            .map(|name| Member {
                name: name.into(),
                open: 0,
                up: true,
                drained: false,
                failures: 0,
                successes: 0,
            })
            .collect();
        Pool { members, strategy }
    }

    /// The members, in the order given.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The index of the member named `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// Chooses the member for a new connection from `user` (the client's
    /// address from `USERADDR`, if the transport sent one), leaving out
    /// `tried` (members this connection already failed on). `None`: no
    /// member is left that is not drained.
    pub fn pick(&self, user: Option<IpAddr>, tried: &[usize]) -> Option<usize> {
        let open = |i: &usize| !self.members[*i].drained && !tried.contains(i);
        let mut candidates: Vec<usize> = (0..self.members.len())
            .filter(open)
            .filter(|&i| self.members[i].up)
            .collect();
        if candidates.is_empty() {
            candidates = (0..self.members.len()).filter(open).collect();
        }
        match (self.strategy, user) {
            (Strategy::UserAddress, Some(ip)) => candidates
                .into_iter()
                .max_by_key(|&i| rendezvous(ip, &self.members[i].name)),
            _ => candidates
                .into_iter()
                .min_by_key(|&i| (self.members[i].open, i)),
        }
    }

    /// Counts a connection to member `index` as open (its tor said `OKAY`).
    pub fn opened(&mut self, index: usize) {
        if let Some(member) = self.members.get_mut(index) {
            member.open += 1;
        }
    }

    /// Counts a connection to member `index` as closed.
    pub fn closed(&mut self, index: usize) {
        if let Some(member) = self.members.get_mut(index) {
            member.open = member.open.saturating_sub(1);
        }
    }

    /// Records a health check or a dial of member `index`; returns the
    /// change of health it caused, if any.
    pub fn checked(&mut self, index: usize, ok: bool) -> Option<Transition> {
        let member = self.members.get_mut(index)?;
        if ok {
            member.failures = 0;
            member.successes = member.successes.saturating_add(1);
            if !member.up && member.successes >= RISE {
                member.up = true;
                return Some(Transition::Up);
            }
            return None;
        }
        member.successes = 0;
        member.failures = member.failures.saturating_add(1);
        if member.up && member.failures >= FALL {
            member.up = false;
            return Some(Transition::Down);
        }
        None
    }

    /// Drains (`true`) or undrains member `name`; `false` if there is none.
    pub fn set_drained(&mut self, name: &str, drained: bool) -> bool {
        let Some(index) = self.find(name) else {
            return false;
        };
        self.members[index].drained = drained;
        true
    }
}

/// One key file of one instance, as `onionlb bridge keys check` found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFile {
    /// There is no such file.
    Missing,
    /// Something that is not a regular file is in its place: a directory
    /// there is the "make `.old` a directory" trick that stops tor's own
    /// rotation.
    Blocked,
    /// A file whose contents have this digest.
    Contents([u8; 32]),
}

/// How one key compares across the instances of a fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyAgreement {
    /// Every instance has the same key.
    Same,
    /// No instance has one (normal for a previous key before any
    /// rotation).
    Absent,
    /// The instances differ: for each, the group of instances holding the
    /// same key (numbered from 1 in order of first appearance), or `None`
    /// where the file is missing or blocked.
    Diverged(Vec<Option<usize>>),
}

impl KeyAgreement {
    /// Compares one key's files, one per instance.
    pub fn of(files: &[KeyFile]) -> Self {
        if files.iter().all(|f| *f == KeyFile::Missing) {
            return KeyAgreement::Absent;
        }
        let mut digests: Vec<[u8; 32]> = Vec::new();
        let groups: Vec<Option<usize>> = files
            .iter()
            .map(|file| match file {
                KeyFile::Contents(digest) => {
                    let index = digests.iter().position(|d| d == digest).unwrap_or_else(|| {
                        digests.push(*digest);
                        digests.len() - 1
                    });
                    Some(index + 1)
                }
                KeyFile::Missing | KeyFile::Blocked => None,
            })
            .collect();
        if digests.len() == 1 && groups.iter().all(Option::is_some) {
            return KeyAgreement::Same;
        }
        KeyAgreement::Diverged(groups)
    }
}

/// One step of a rolling onion-key rotation over a fleet; `usize` values
/// index the tors as given, the first being the lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationStep {
    /// Send the tor no new connections.
    Drain(usize),
    /// Let it take new connections again.
    Undrain(usize),
    /// Drain the first and undrain the second at once, so that some tor
    /// takes new connections throughout.
    Swap {
        /// The tor to drain.
        drain: usize,
        /// The tor to undrain.
        undrain: usize,
    },
    /// Stop it.
    Stop(usize),
    /// Mark its onion keys as due (its state's `LastRotatedOnionKey` long
    /// ago), so it rotates them when it starts.
    MakeDue(usize),
    /// Start it.
    Start(usize),
    /// Wait until it has rotated: its current onion keys are new.
    AwaitRotated(usize),
    /// Wait until it serves again.
    AwaitUp(usize),
    /// Give it the lead's current onion keys as its previous ones, and the
    /// lead's rotation time (it keeps its current keys).
    TakePrevious(usize),
    /// Give it the lead's current and previous onion keys, and the lead's
    /// rotation time: it is then the lead's twin.
    TakeCurrent(usize),
}

/// The steps that rotate a fleet's onion keys without a moment in which a
/// client holding any tor's published keys meets a tor that cannot use
/// them, for `tors` tors (the first leads). Every tor accepts its current
/// and its previous onion keys, so:
///
/// 1. the lead rotates while drained (no client can learn its new keys);
/// 2. every other tor takes the new keys as its previous ones: now every
///    tor accepts the old keys and the new;
/// 3. the lead is undrained and publishes the new keys (as the last
///    other tor is drained, so that some tor serves throughout);
/// 4. every other tor takes the new keys as current and the old as
///    previous: the fleet is alike again, and a client still holding the
///    old keys is served until the next rotation.
///
/// Each tor is drained before it stops and undrained once it serves.
/// Every tor's rotation time becomes the lead's, so none rotates on its
/// own before the next planned rotation if those come more often than
/// `onion-key-rotation-days`.
pub fn rotation_plan(tors: usize) -> Vec<RotationStep> {
    use RotationStep::*;
    let mut plan = Vec::new();
    if tors == 0 {
        return plan;
    }
    let restart =
        |tor: usize, take: RotationStep| [Stop(tor), take, Start(tor), AwaitUp(tor), Undrain(tor)];
    plan.extend([
        Drain(0),
        Stop(0),
        MakeDue(0),
        Start(0),
        AwaitRotated(0),
        AwaitUp(0),
    ]);
    for tor in 1..tors {
        // The lead may serve once no tor without its new keys does: when
        // the last of the others stops taking new connections.
        if tor + 1 == tors {
            plan.push(Swap {
                drain: tor,
                undrain: 0,
            });
        } else {
            plan.push(Drain(tor));
        }
        plan.extend(restart(tor, TakePrevious(tor)));
    }
    if tors == 1 {
        plan.push(Undrain(0));
    }
    for tor in 1..tors {
        plan.push(Drain(tor));
        plan.extend(restart(tor, TakeCurrent(tor)));
    }
    plan
}

/// The rendezvous-hashing weight of `member` for client `ip`.
fn rendezvous(ip: IpAddr, member: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    match ip {
        IpAddr::V4(v4) => hash.update(v4.octets()),
        IpAddr::V6(v6) => hash.update(v6.octets()),
    }
    hash.update([0]);
    hash.update(member.as_bytes());
    hash.finalize().into()
}

#[cfg(test)]
mod test {
    use super::*;

    fn pool(strategy: Strategy) -> Pool {
        Pool::new(["a", "b", "c"], strategy)
    }

    #[test]
    fn a_rotation_never_leaves_a_served_tor_without_the_keys_another_publishes() {
        use RotationStep::*;
        // Simulate each tor's (current, previous) keys: 0 old, 1 new; a
        // drained or stopped tor publishes nothing and serves nobody new.
        for tors in 1..5 {
            let mut keys = vec![(0u8, None::<u8>); tors];
            let mut serving = vec![true; tors];
            let mut due = vec![false; tors];
            let mut published = std::collections::BTreeSet::from([0u8]);
            for step in rotation_plan(tors) {
                match step {
                    Drain(t) | Stop(t) => serving[t] = false,
                    MakeDue(t) => due[t] = true,
                    Start(t) if due[t] => keys[t] = (1, Some(keys[t].0)),
                    TakePrevious(t) => keys[t].1 = Some(keys[0].0),
                    TakeCurrent(t) => keys[t] = keys[0],
                    Undrain(t) => serving[t] = true,
                    Swap { drain, undrain } => {
                        serving[drain] = false;
                        serving[undrain] = true;
                    }
                    Start(_) | AwaitRotated(_) | AwaitUp(_) => {}
                }
                assert!(
                    tors == 1 || serving.contains(&true),
                    "{tors} tors, after {step:?}: none takes new connections"
                );
                // Clients keep what they learned: every key ever published
                // must still work on every tor that serves.
                for t in (0..tors).filter(|&t| serving[t]) {
                    published.insert(keys[t].0);
                }
                for t in (0..tors).filter(|&t| serving[t]) {
                    for key in &published {
                        assert!(
                            keys[t].0 == *key || keys[t].1 == Some(*key),
                            "{tors} tors, after {step:?}: tor {t} {:?} cannot use key {key}",
                            keys[t]
                        );
                    }
                }
            }
            assert!(keys.iter().all(|k| *k == (1, Some(0))), "{keys:?}");
            assert!(serving.iter().all(|s| *s), "every tor serves at the end");
        }
    }

    #[test]
    fn keys_agree_only_when_every_instance_has_the_same() {
        let a = KeyFile::Contents([1; 32]);
        let b = KeyFile::Contents([2; 32]);
        assert_eq!(KeyAgreement::of(&[a, a, a]), KeyAgreement::Same);
        assert_eq!(
            KeyAgreement::of(&[KeyFile::Missing, KeyFile::Missing]),
            KeyAgreement::Absent
        );
        assert_eq!(
            KeyAgreement::of(&[a, b, a]),
            KeyAgreement::Diverged(vec![Some(1), Some(2), Some(1)])
        );
        assert_eq!(
            KeyAgreement::of(&[b, KeyFile::Missing]),
            KeyAgreement::Diverged(vec![Some(1), None])
        );
        assert_eq!(
            KeyAgreement::of(&[KeyFile::Blocked, KeyFile::Blocked]),
            KeyAgreement::Diverged(vec![None, None])
        );
    }

    #[test]
    fn least_connections_fills_the_emptiest_first() {
        let mut pool = pool(Strategy::LeastConnections);
        let mut picks = Vec::new();
        for _ in 0..6 {
            let i = pool.pick(None, &[]).unwrap();
            pool.opened(i);
            picks.push(i);
        }
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        pool.closed(1);
        pool.closed(1);
        assert_eq!(pool.pick(None, &[]), Some(1));
        assert_eq!(pool.pick(None, &[1]), Some(0), "a member tried is left out");
    }

    #[test]
    fn drained_members_take_nothing_new_and_keep_their_count() {
        let mut pool = pool(Strategy::LeastConnections);
        pool.opened(0);
        assert!(pool.set_drained("a", true));
        assert!(!pool.set_drained("zz", true));
        for _ in 0..4 {
            let i = pool.pick(None, &[]).unwrap();
            assert_ne!(i, 0);
            pool.opened(i);
        }
        assert_eq!(pool.members()[0].open(), 1);
        pool.set_drained("b", true);
        pool.set_drained("c", true);
        assert_eq!(pool.pick(None, &[]), None, "every member drained");
        pool.set_drained("a", false);
        assert_eq!(pool.pick(None, &[]), Some(0));
    }

    #[test]
    fn down_after_two_failures_up_after_two_successes() {
        let mut pool = pool(Strategy::LeastConnections);
        assert_eq!(pool.checked(0, false), None, "one failure is not enough");
        assert_eq!(pool.checked(0, true), None);
        assert_eq!(pool.checked(0, false), None, "the count starts again");
        assert_eq!(pool.checked(0, false), Some(Transition::Down));
        assert_eq!(pool.checked(0, false), None, "already down");
        assert_eq!(pool.pick(None, &[]), Some(1));
        assert_eq!(pool.checked(0, true), None);
        assert_eq!(pool.checked(0, true), Some(Transition::Up));
        assert_eq!(pool.pick(None, &[]), Some(0));
    }

    #[test]
    fn with_every_member_down_the_undrained_are_still_tried() {
        let mut pool = pool(Strategy::LeastConnections);
        for i in 0..3 {
            pool.checked(i, false);
            pool.checked(i, false);
        }
        pool.set_drained("a", true);
        assert_eq!(pool.pick(None, &[]), Some(1));
        assert_eq!(pool.pick(None, &[1]), Some(2));
        assert_eq!(pool.pick(None, &[1, 2]), None);
    }

    #[test]
    fn a_client_address_stays_on_its_member_and_moves_only_when_it_leaves() {
        let mut pool = pool(Strategy::UserAddress);
        let clients: Vec<IpAddr> = (0..300u32)
            .map(|n| IpAddr::from(std::net::Ipv4Addr::from(0xc000_0200 + n)))
            .collect();
        let before: Vec<usize> = clients
            .iter()
            .map(|&ip| pool.pick(Some(ip), &[]).unwrap())
            .collect();
        for member in 0..3 {
            let share = before.iter().filter(|&&m| m == member).count();
            assert!(
                (60..=140).contains(&share),
                "member {member}: {share} of 300"
            );
        }
        pool.set_drained("b", true);
        for (ip, &was) in clients.iter().zip(&before) {
            let now = pool.pick(Some(*ip), &[]).unwrap();
            if was == 1 {
                assert_ne!(now, 1);
            } else {
                assert_eq!(now, was, "a client of a member still serving moved");
            }
        }
        pool.set_drained("b", false);
        let after: Vec<usize> = clients
            .iter()
            .map(|&ip| pool.pick(Some(ip), &[]).unwrap())
            .collect();
        assert_eq!(after, before);
        // Without an address the strategy falls back to the fewest
        // connections.
        pool.opened(0);
        assert_eq!(pool.pick(None, &[]), Some(1));
    }
}
