//! Message history, hot and cold: the newest messages of each active private
//! conversation and group are kept in memory, so the pages clients read
//! most (the newest, and paging back a few) never touch the database; older
//! pages are read from the store. The HTTP layer reads pages through
//! [`History`]; the writer keeps the cache equal to the database after each
//! COMMIT (new messages, status changes, edits, deletions, reactions), and a
//! read that finds a thread missing fills it from the database.
//!
//! Bounds: at most [`THREAD_CAP`] messages per thread, and a byte budget
//! over all threads, beyond which the threads read least recently are
//! dropped. With a budget of 0 (and always in a cluster, where other nodes'
//! writers would not reach this cache) every page is read from the store.

use std::collections::VecDeque;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::caches::Caches;
use crate::error::ChatResult;
use crate::metrics::Metrics;
use crate::model::{
    DeliveryStatus, GroupMessage, Lifecycle, Page, PrivateMessage, Reaction, UserRef,
};
use crate::store::Store;

/// Most messages kept per conversation or group: a few pages of the
/// default 50.
pub const THREAD_CAP: usize = 256;

/// The default byte budget of the whole cache.
pub const DEFAULT_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// A private conversation, by its two users' ids (lower first).
pub type Pair = (i64, i64);

/// The two users of a private conversation as its key.
pub fn pair(a: i64, b: i64) -> Pair {
    (a.min(b), a.max(b))
}

/// Reads history pages, from memory when it can.
pub struct History {
    store: Store,
    /// Senders' names for group pages.
    names: Arc<Caches>,
    cache: HistoryCache,
    metrics: Arc<Metrics>,
}

impl History {
    pub(crate) fn new(
        store: Store,
        names: Arc<Caches>,
        cache: HistoryCache,
        metrics: Arc<Metrics>,
    ) -> Self {
        History {
            store,
            names,
            cache,
            metrics,
        }
    }

    /// Counts where a page came from; the cache's size now.
    fn counted<T>(&self, page: T, from_memory: bool) -> T {
        let counter = match from_memory {
            true => &self.metrics.history_pages_cached,
            false => &self.metrics.history_pages_stored,
        };
        counter.inc();
        let bytes = self.cache.used.load(Ordering::Relaxed);
        self.metrics.history_cache_bytes.set(bytes as i64);
        page
    }

    /// A page of the conversation between `me` and `other`, ascending id.
    pub async fn private_page(
        &self,
        me: &UserRef,
        other: &UserRef,
        page: Page,
    ) -> ChatResult<Vec<Arc<PrivateMessage>>> {
        let key = pair(me.id, other.id);
        let threads = &self.cache.private;
        let fill = match self.cache.lookup(threads, key, page) {
            Lookup::Hit(messages) => return Ok(self.counted(messages, true)),
            Lookup::Miss(fill) => fill,
        };
        if let Some(fill) = fill {
            let newest = self.store.private_history(me, other, newest()).await?;
            let newest: Vec<Arc<PrivateMessage>> = newest.into_iter().map(Arc::new).collect();
            let answer = slice(&newest, newest.len() < THREAD_CAP, page);
            self.cache.finish_fill(threads, key, fill, newest);
            if let Some(answer) = answer {
                return Ok(self.counted(answer, false));
            }
        }
        let messages = self.store.private_history(me, other, page).await?;
        Ok(self.counted(messages.into_iter().map(Arc::new).collect(), false))
    }

    /// A page of a group's messages, ascending id.
    pub async fn group_page(
        &self,
        group_id: i64,
        page: Page,
    ) -> ChatResult<Vec<Arc<GroupMessage>>> {
        let threads = &self.cache.groups;
        let fill = match self.cache.lookup(threads, group_id, page) {
            Lookup::Hit(messages) => return Ok(self.counted(messages, true)),
            Lookup::Miss(fill) => fill,
        };
        if let Some(fill) = fill {
            let newest = self
                .store
                .group_history(group_id, newest(), &*self.names)
                .await?;
            let newest: Vec<Arc<GroupMessage>> = newest.into_iter().map(Arc::new).collect();
            let answer = slice(&newest, newest.len() < THREAD_CAP, page);
            self.cache.finish_fill(threads, group_id, fill, newest);
            if let Some(answer) = answer {
                return Ok(self.counted(answer, false));
            }
        }
        let messages = self
            .store
            .group_history(group_id, page, &*self.names)
            .await?;
        Ok(self.counted(messages.into_iter().map(Arc::new).collect(), false))
    }

    /// What the cache holds of a private conversation (`None` if nothing),
    /// newest last: for checking it against the database.
    pub fn cached_private(&self, a: i64, b: i64) -> Option<Vec<Arc<PrivateMessage>>> {
        self.cache.cached(&self.cache.private, pair(a, b))
    }

    /// What the cache holds of a group (`None` if nothing), newest last.
    pub fn cached_group(&self, group_id: i64) -> Option<Vec<Arc<GroupMessage>>> {
        self.cache.cached(&self.cache.groups, group_id)
    }

    pub(crate) fn cache(&self) -> &HistoryCache {
        &self.cache
    }
}

/// The page a fill reads: the newest [`THREAD_CAP`] messages.
fn newest() -> Page {
    Page {
        before: None,
        after: None,
        limit: THREAD_CAP as i64,
    }
}

/// A message the cache can hold.
pub(crate) trait Cached: Send + Sync + 'static {
    fn id(&self) -> i64;
    /// About how many bytes it takes, for the budget.
    fn weight(&self) -> usize;
}

impl Cached for PrivateMessage {
    fn id(&self) -> i64 {
        self.id
    }

    fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.sender.len()
            + self.recipient.len()
            + self.content.len()
            + self.message_type.len()
            + self.content_type.len()
            + lifecycle_weight(&self.lifecycle)
    }
}

impl Cached for GroupMessage {
    fn id(&self) -> i64 {
        self.id
    }

    fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.sender.len()
            + self.content.len()
            + self.message_type.len()
            + self.content_type.len()
            + lifecycle_weight(&self.lifecycle)
    }
}

fn lifecycle_weight(lifecycle: &Lifecycle) -> usize {
    lifecycle
        .reactions
        .iter()
        .map(|reaction: &Reaction| {
            std::mem::size_of::<Reaction>()
                + reaction.emoji.len()
                + reaction
                    .users
                    .iter()
                    .map(|user| user.len() + 24)
                    .sum::<usize>()
        })
        .sum()
}

/// What a thread's slot holds.
enum Slot<M> {
    /// A read is filling it from the database. A change the writer applies
    /// meanwhile may be missing from what that read sees, so it marks the
    /// fill spoilt and the read's result is dropped.
    Filling {
        fill: u64,
        spoilt: bool,
    },
    Ready(Recent<M>),
}

/// The newest messages of one thread.
struct Recent<M> {
    /// Ascending id, and contiguous: every message of the thread with an id
    /// from the first one's up is here.
    messages: VecDeque<Arc<M>>,
    /// `messages` is the whole thread.
    whole: bool,
    /// When it was last read, on the cache's clock (for eviction).
    last_used: AtomicU64,
    /// The sum of its messages' weights.
    weight: usize,
}

/// What a page lookup found.
enum Lookup<M> {
    Hit(Vec<Arc<M>>),
    /// Not in memory; the read may fill the thread if it holds the ticket.
    Miss(Option<u64>),
}

/// The cache itself: one map of threads per kind.
pub(crate) struct HistoryCache {
    private: DashMap<Pair, Slot<PrivateMessage>>,
    groups: DashMap<i64, Slot<GroupMessage>>,
    /// Bytes allowed over all threads; 0 = off.
    budget: usize,
    /// Bytes held now.
    used: AtomicUsize,
    /// Ticks on every read; orders threads for eviction and names fills.
    clock: AtomicU64,
}

impl HistoryCache {
    pub(crate) fn new(budget: usize) -> Self {
        HistoryCache {
            private: DashMap::new(),
            groups: DashMap::new(),
            budget,
            used: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    fn lookup<K: Eq + Hash + Copy, M: Cached>(
        &self,
        threads: &DashMap<K, Slot<M>>,
        key: K,
        page: Page,
    ) -> Lookup<M> {
        if self.budget == 0 {
            return Lookup::Miss(None);
        }
        if let Some(slot) = threads.get(&key) {
            return match &*slot {
                Slot::Ready(recent) => {
                    recent.last_used.store(self.tick(), Ordering::Relaxed);
                    let messages = recent.messages.as_slices();
                    match slice_deque(messages, recent.whole, page) {
                        Some(answer) => Lookup::Hit(answer),
                        None => Lookup::Miss(None),
                    }
                }
                Slot::Filling { .. } => Lookup::Miss(None),
            };
        }
        let fill = self.tick();
        match threads.entry(key) {
            Entry::Vacant(vacant) => {
                vacant.insert(Slot::Filling {
                    fill,
                    spoilt: false,
                });
                Lookup::Miss(Some(fill))
            }
            Entry::Occupied(_) => Lookup::Miss(None),
        }
    }

    /// Installs what a fill read (the newest messages, ascending), unless a
    /// change spoilt it meanwhile or the slot is no longer this fill's.
    fn finish_fill<K: Eq + Hash + Copy, M: Cached>(
        &self,
        threads: &DashMap<K, Slot<M>>,
        key: K,
        fill: u64,
        newest: Vec<Arc<M>>,
    ) {
        let mut added = 0;
        if let Entry::Occupied(mut occupied) = threads.entry(key) {
            match occupied.get() {
                Slot::Filling {
                    fill: ours,
                    spoilt: false,
                } if *ours == fill => {
                    let weight = newest.iter().map(|m| m.weight()).sum();
                    added = weight;
                    occupied.insert(Slot::Ready(Recent {
                        whole: newest.len() < THREAD_CAP,
                        messages: newest.into(),
                        last_used: AtomicU64::new(self.tick()),
                        weight,
                    }));
                }
                Slot::Filling { fill: ours, .. } if *ours == fill => {
                    occupied.remove();
                }
                _ => {}
            }
        }
        if added > 0 {
            self.used.fetch_add(added, Ordering::Relaxed);
            self.evict_if_over_budget();
        }
    }

    fn cached<K: Eq + Hash + Copy, M: Cached>(
        &self,
        threads: &DashMap<K, Slot<M>>,
        key: K,
    ) -> Option<Vec<Arc<M>>> {
        match &*threads.get(&key)? {
            Slot::Ready(recent) => Some(recent.messages.iter().cloned().collect()),
            Slot::Filling { .. } => None,
        }
    }

    /// A message the writer committed: appended to its thread if the
    /// thread is cached (a thread not cached is read whole on its first use).
    fn append<K: Eq + Hash + Copy, M: Cached>(
        &self,
        threads: &DashMap<K, Slot<M>>,
        key: K,
        message: Arc<M>,
    ) {
        let Some(mut slot) = threads.get_mut(&key) else {
            return;
        };
        let (added, removed) = match &mut *slot {
            Slot::Filling { spoilt, .. } => {
                *spoilt = true;
                return;
            }
            Slot::Ready(recent) => {
                let newest = recent.messages.back().map_or(0, |m| m.id());
                if message.id() <= newest {
                    // Already there: the thread was filled after this commit.
                    return;
                }
                let added = message.weight();
                recent.messages.push_back(message);
                let mut removed = 0;
                while recent.messages.len() > THREAD_CAP {
                    if let Some(oldest) = recent.messages.pop_front() {
                        removed += oldest.weight();
                    }
                    recent.whole = false;
                }
                recent.weight = recent.weight + added - removed;
                (added, removed)
            }
        };
        drop(slot);
        self.used.fetch_add(added, Ordering::Relaxed);
        self.used.fetch_sub(removed, Ordering::Relaxed);
        self.evict_if_over_budget();
    }

    /// A committed change to a message: `change` makes its new state from
    /// the cached one. A message older than what is cached is not here.
    fn update<K: Eq + Hash + Copy, M: Cached + Clone>(
        &self,
        threads: &DashMap<K, Slot<M>>,
        key: K,
        id: i64,
        change: impl FnOnce(&mut M),
    ) {
        let Some(mut slot) = threads.get_mut(&key) else {
            return;
        };
        let recent = match &mut *slot {
            Slot::Filling { spoilt, .. } => {
                *spoilt = true;
                return;
            }
            Slot::Ready(recent) => recent,
        };
        let Ok(at) = recent.messages.binary_search_by_key(&id, |m| m.id()) else {
            return;
        };
        let mut changed = M::clone(&recent.messages[at]);
        change(&mut changed);
        let (before, after) = (recent.messages[at].weight(), changed.weight());
        recent.messages[at] = Arc::new(changed);
        recent.weight = recent.weight + after - before;
        drop(slot);
        self.used.fetch_add(after, Ordering::Relaxed);
        self.used.fetch_sub(before, Ordering::Relaxed);
    }

    /// Drops the threads read least recently until the cache is a tenth
    /// under its budget (so that eviction runs now and then, not on every
    /// message).
    fn evict_if_over_budget(&self) {
        if self.used.load(Ordering::Relaxed) <= self.budget {
            return;
        }
        let mut ages: Vec<(u64, Option<Pair>, Option<i64>, usize)> = Vec::new();
        for slot in self.private.iter() {
            if let Slot::Ready(recent) = slot.value() {
                let used = recent.last_used.load(Ordering::Relaxed);
                ages.push((used, Some(*slot.key()), None, recent.weight));
            }
        }
        for slot in self.groups.iter() {
            if let Slot::Ready(recent) = slot.value() {
                let used = recent.last_used.load(Ordering::Relaxed);
                ages.push((used, None, Some(*slot.key()), recent.weight));
            }
        }
        ages.sort_unstable_by_key(|age| age.0);
        let target = self.budget - self.budget / 10;
        for (_, private, group, _) in ages {
            if self.used.load(Ordering::Relaxed) <= target {
                break;
            }
            let freed = match (private, group) {
                (Some(key), _) => remove_ready(&self.private, key),
                (_, Some(key)) => remove_ready(&self.groups, key),
                _ => 0,
            };
            self.used.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    /// Applies what a committed write changed in a thread's history; the
    /// writer calls this after COMMIT, in commit order.
    pub(crate) fn apply(&self, change: HistoryChange) {
        if self.budget == 0 {
            return;
        }
        match change {
            HistoryChange::PrivateStored(key, message) => self.append(&self.private, key, message),
            HistoryChange::GroupStored(message) => {
                self.append(&self.groups, message.group_id, message)
            }
            HistoryChange::PrivateStatus(key, id, status) => {
                self.update(&self.private, key, id, |m| m.status = status)
            }
            HistoryChange::PrivateChanged(key, message) => {
                self.update(&self.private, key, message.id, |m| *m = message)
            }
            HistoryChange::GroupChanged(message) => {
                let key = message.group_id;
                self.update(&self.groups, key, message.id, |m| *m = message)
            }
        }
    }
}

/// What a committed write changed in a thread's history.
pub(crate) enum HistoryChange {
    PrivateStored(Pair, Arc<PrivateMessage>),
    GroupStored(Arc<GroupMessage>),
    /// A private message's status changed (delivered, read, or back to sent).
    PrivateStatus(Pair, i64, DeliveryStatus),
    /// A private message was edited, deleted or reacted to: its new state.
    PrivateChanged(Pair, PrivateMessage),
    /// A group message was edited, deleted or reacted to: its new state.
    GroupChanged(GroupMessage),
}

/// Removes a thread if it is ready (a fill in progress stays); its weight.
fn remove_ready<K: Eq + Hash + Copy, M>(threads: &DashMap<K, Slot<M>>, key: K) -> usize {
    let removed = threads.remove_if(&key, |_, slot| matches!(slot, Slot::Ready(_)));
    match removed {
        Some((_, Slot::Ready(recent))) => recent.weight,
        _ => 0,
    }
}

/// The page of `messages` (a thread's newest, ascending and contiguous;
/// `whole` if they are all of it) that the database would answer, or `None`
/// if that page may hold older messages than these.
fn slice<M>(messages: &[Arc<M>], whole: bool, page: Page) -> Option<Vec<Arc<M>>>
where
    M: Cached,
{
    slice_deque((messages, &[]), whole, page)
}

fn slice_deque<M: Cached>(
    (front, back): (&[Arc<M>], &[Arc<M>]),
    whole: bool,
    page: Page,
) -> Option<Vec<Arc<M>>> {
    let all = || front.iter().chain(back.iter());
    let first = all().next().map(|m| m.id());
    let before = page.before.unwrap_or(i64::MAX);
    let limit = page.limit.max(0) as usize;
    match page.after {
        Some(after) => {
            // Every message above `after` must be here.
            let covered = whole || first.is_some_and(|first| after >= first - 1);
            if !covered {
                return None;
            }
            Some(
                all()
                    .filter(|m| m.id() > after && m.id() < before)
                    .take(limit)
                    .cloned()
                    .collect(),
            )
        }
        None => {
            // A page wholly below what is here (the random pages of an old
            // conversation) is known without walking the thread.
            if !whole && first.is_none_or(|first| before <= first) {
                return None;
            }
            let below: Vec<&Arc<M>> = all().filter(|m| m.id() < before && m.id() > 0).collect();
            if below.len() < limit && !whole {
                return None;
            }
            let start = below.len().saturating_sub(limit);
            Some(below[start..].iter().map(|m| Arc::clone(m)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;

    fn message(id: i64) -> Arc<GroupMessage> {
        Arc::new(GroupMessage {
            id,
            group_id: 1,
            sender: "alice".into(),
            content: format!("m{id}"),
            message_type: "text".into(),
            content_type: "text/plain".into(),
            timestamp: Timestamp(id),
            lifecycle: Lifecycle::default(),
        })
    }

    fn ids(page: Option<Vec<Arc<GroupMessage>>>) -> Option<Vec<i64>> {
        page.map(|messages| messages.iter().map(|m| m.id).collect())
    }

    fn page(before: Option<i64>, after: Option<i64>, limit: i64) -> Page {
        Page {
            before,
            after,
            limit,
        }
    }

    #[test]
    fn a_page_is_answered_only_when_the_cached_suffix_holds_all_of_it() {
        let cached: Vec<_> = [10, 12, 15, 20, 21].into_iter().map(message).collect();
        // The newest two, and two below 20.
        assert_eq!(
            ids(slice(&cached, false, page(None, None, 2))),
            Some(vec![20, 21])
        );
        assert_eq!(
            ids(slice(&cached, false, page(Some(20), None, 2))),
            Some(vec![12, 15])
        );
        // Three below 15 reach past what is cached: unknown unless whole.
        assert_eq!(ids(slice(&cached, false, page(Some(15), None, 3))), None);
        assert_eq!(
            ids(slice(&cached, true, page(Some(15), None, 3))),
            Some(vec![10, 12])
        );
        // Wholly below the first cached: unknown, or empty if whole.
        assert_eq!(ids(slice(&cached, false, page(Some(10), None, 3))), None);
        assert_eq!(ids(slice(&cached, false, page(Some(4), None, 3))), None);
        assert_eq!(
            ids(slice(&cached, true, page(Some(10), None, 3))),
            Some(vec![])
        );
        // Forward from 12 is all here; from 5 only if whole.
        assert_eq!(
            ids(slice(&cached, false, page(None, Some(12), 2))),
            Some(vec![15, 20])
        );
        assert_eq!(
            ids(slice(&cached, false, page(None, Some(9), 9))),
            Some(vec![10, 12, 15, 20, 21])
        );
        assert_eq!(ids(slice(&cached, false, page(None, Some(5), 2))), None);
        assert_eq!(
            ids(slice(&cached, true, page(None, Some(5), 2))),
            Some(vec![10, 12])
        );
        // Both bounds.
        assert_eq!(
            ids(slice(&cached, false, page(Some(21), Some(12), 9))),
            Some(vec![15, 20])
        );
    }

    #[test]
    fn a_change_during_a_fill_spoils_it_and_the_thread_stays_uncached() {
        let cache = HistoryCache::new(DEFAULT_BUDGET_BYTES);
        let Lookup::Miss(Some(fill)) = cache.lookup(&cache.groups, 1, newest()) else {
            panic!("the first read fills");
        };
        assert!(
            matches!(cache.lookup(&cache.groups, 1, newest()), Lookup::Miss(None)),
            "a second read does not fill at the same time"
        );
        cache.append(&cache.groups, 1, message(30));
        cache.finish_fill(&cache.groups, 1, fill, vec![message(10), message(20)]);
        assert!(
            cache.cached(&cache.groups, 1).is_none(),
            "the spoilt fill is dropped"
        );

        let Lookup::Miss(Some(fill)) = cache.lookup(&cache.groups, 1, newest()) else {
            panic!("the next read fills again");
        };
        cache.finish_fill(
            &cache.groups,
            1,
            fill,
            vec![message(10), message(20), message(30)],
        );
        cache.append(&cache.groups, 1, message(31));
        assert_eq!(
            ids(cache.cached(&cache.groups, 1)),
            Some(vec![10, 20, 30, 31])
        );
    }

    #[test]
    fn a_thread_keeps_its_newest_messages_and_the_budget_evicts_the_least_read() {
        let weight = message(1).weight();
        let cache = HistoryCache::new(weight * THREAD_CAP * 4 / 3);
        for group in [1, 2] {
            let Lookup::Miss(Some(fill)) = cache.lookup(&cache.groups, group, newest()) else {
                panic!("fills");
            };
            cache.finish_fill(&cache.groups, group, fill, vec![]);
        }
        for id in 1..=(THREAD_CAP as i64 + 5) {
            cache.append(&cache.groups, 1, message(id));
        }
        let kept = ids(cache.cached(&cache.groups, 1)).expect("group 1 is cached");
        assert_eq!(kept.len(), THREAD_CAP);
        assert_eq!(kept.first(), Some(&6), "the oldest five were dropped");
        // Group 2 was read after group 1 filled; reading group 1 now makes
        // group 2 the least recently read, and its messages push the
        // cache over its budget.
        let _ = cache.lookup(&cache.groups, 1, newest());
        for id in 1000..1120 {
            cache.append(&cache.groups, 2, message(id));
        }
        assert!(
            cache.cached(&cache.groups, 2).is_none(),
            "group 2 was evicted"
        );
        assert!(cache.cached(&cache.groups, 1).is_some(), "group 1 stays");
        assert!(cache.used.load(Ordering::Relaxed) <= cache.budget);
    }
}
