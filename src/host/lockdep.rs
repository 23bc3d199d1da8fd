//! Lock-order checking on the host ("lockdep"): recursive acquisitions and potential
//! deadlocks are reported the first time the code that causes them runs, before anything
//! hangs.
//!
//! Why one file of over 500 lines: about 580 are the checker (lock classes, each thread's
//! held locks, the order graph and its cycle search, the two-path reports), one concept
//! whose parts share private state; the rest are its unit tests, which feed it orders
//! directly.
//!
//! Modelled on Linux's lockdep (`kernel/locking/lockdep.c`):
//!
//! * **Lock classes.** Every [`SpinLock`](crate::sync::SpinLock), [`WaitLock`](crate::sync::WaitLock),
//!   work item and timer carries a [`LockMap`] (lockdep's `lockdep_map`) naming its class:
//!   the kind, the type it guards (or its context type) and the place in the source where
//!   it was created (`#[track_caller]` on the constructors). As in Linux, where a lock's
//!   class is the static key at its `spin_lock_init` site, the creation site is what makes
//!   two locks "the same lock" for ordering: the `pending` lock of every toaster device is
//!   one class, so an order seen on one device protects all of them. The type name is in
//!   the key too, so a generic helper that creates locks for several types gives one class
//!   per type, and it makes the messages readable (`SpinLock<toaster::Queue>`).
//! * **Held locks.** Each thread keeps the list of what it holds, with where it acquired it.
//!   Taking a lock the thread already holds panics at once (it would hang forever; KMDF's
//!   verifier bug checks with `WDF_RECURSIVE_LOCK` in `FxVerifierLock::Lock`, and a spin
//!   lock taken twice spins forever). `WaitLock::try_lock` on a lock the thread holds
//!   returns `None` without a panic, like `WdfWaitLockAcquire` with a zero timeout, whose
//!   wait on the lock's event times out (`FxWaitLockInternal::AcquireLock` asserts only for
//!   a recursive acquisition *without* timeout).
//! * **The order graph.** When a thread that holds `A` acquires `B`, the edge `A -> B` (in
//!   classes) is added to one process-wide graph, as lockdep's is system-wide. An edge that
//!   closes a cycle is an order inversion: some threads taking the locks along the cycle at
//!   the same time deadlock. It is reported then, the first time the second order is
//!   seen, even when the threads happened not to overlap. A try-lock adds no edge to the
//!   lock it takes (it cannot wait), but the lock counts as held for what follows.
//! * **Waits.** A work item's or timer's callback holds a pseudo-lock of the item's class
//!   while it runs; a thread that waits for the callback (`WorkItem::flush`,
//!   `Timer::stop(true)`, a deletion waiting for a running callback) acquires that
//!   pseudo-lock for a moment ([`wait_for`]), as Linux's `flush_work` acquires the work's
//!   `lockdep_map`. So "holds `L`, flushes `W`" and "`W`'s callback takes `L`" form the cycle
//!   `L -> W -> L`, reported whichever of the two is seen second. Every wait for a callback
//!   calls the one hook [`wait_for`].
//!
//! A report is a panic at the offending acquisition or wait, before the thread blocks. In a
//! driver callback it is caught at the callback boundary like any panic, so it fails the
//! test: a PnP callback fails with `STATUS_UNSUCCESSFUL` (its device takes KMDF's failure
//! path), a work item's or timer's makes the next action, `advance` or
//! `wait_for_work_items` return `CallbackPanicked`, and `Runtime::panics` carries the
//! message; on the test's own thread it fails the test directly. The message names both paths: the callback each ran in, the
//! lock types and where they were created and acquired. The edge that would close the
//! cycle is not added, so the same inversion is reported again each time it is attempted.
//!
//! Limits: two locks of one class (two devices' `pending` locks) nested in each other are
//! not ordered against each other (no edge from a class to itself), so an inversion between
//! two instances of one class is not seen; Linux asks for nesting annotations there. The
//! graph is process-wide: an order taken in one test and its inversion in another test of
//! the same test binary are reported (in the second one to run). Waits for anything other
//! than a work item's or timer's callback (`Runtime::wait_for_work_items`, a deletion
//! waiting for another thread's deletion of the same object) are not modelled, nor are the
//! framework's own rundowns of a removed device's work items and timers: they run after the
//! device's callbacks returned, holding no driver lock (a panic there would also leave the
//! object half deleted); the driver's own `WorkItem::delete` and `Timer::delete` are.
//!
//! Cost: taking a lock with no other lock held is a thread-local push (and a pop on
//! release); with locks held, a scan of them for recursion and one lookup per held lock in
//! a per-thread cache of known edges. Only an edge not in that cache takes the global
//! graph's mutex (and a search of the graph if the edge is new to the process). Measured
//! in `benches/locks.rs` and `benches/work_item.rs` (`BENCHMARKS.md`).

use super::std;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::{self, Write as _};
use std::panic::Location;
use std::string::String;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::vec::Vec;

use super::sync_shim::local;
#[cfg(loom)]
use super::sync_shim::{LocalExt as _, LocalRefExt as _};
use crate::Callback;

/// What kind of thing a class is: a lock, or the callback of a work item or timer (a
/// pseudo-lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    SpinLock,
    WaitLock,
    WorkItem,
    Timer,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::SpinLock => "SpinLock",
            Kind::WaitLock => "WaitLock",
            Kind::WorkItem => "WorkItem",
            Kind::Timer => "Timer",
        }
    }

    /// Whether the class is a callback's pseudo-lock.
    fn is_callback(self) -> bool {
        matches!(self, Kind::WorkItem | Kind::Timer)
    }
}

/// A lock's (or a work item's or timer's) lockdep identity: its class key, and the class
/// once registered in the graph (Linux's `lockdep_map`).
pub(crate) struct LockMap {
    key: ClassKey,
    /// The class id plus one; 0 until the class is looked up, the first time it is needed.
    class: AtomicU32,
}

impl LockMap {
    /// The identity of a `kind` guarding (or running) a `type_name`, created at `site`.
    pub(crate) const fn new(
        kind: Kind,
        type_name: &'static str,
        site: &'static Location<'static>,
    ) -> Self {
        Self { key: ClassKey { kind, type_name, site }, class: AtomicU32::new(0) }
    }

    /// What the class is: a spin lock, a wait lock, or a callback.
    pub(crate) fn kind(&self) -> Kind {
        self.key.kind
    }

    fn class(&self) -> ClassId {
        match self.class.load(Ordering::Relaxed) {
            0 => self.register(),
            stored => stored - 1,
        }
    }

    /// Looks the class up in the graph, once per lock.
    #[cold]
    fn register(&self) -> ClassId {
        let class = lock_graph().register(self.key);
        self.class.store(class + 1, Ordering::Relaxed);
        class
    }
}

impl fmt::Display for LockMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key.fmt(f)
    }
}

type ClassId = u32;

/// What makes two locks the same class: the kind, the type, the creation site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ClassKey {
    kind: Kind,
    type_name: &'static str,
    site: &'static Location<'static>,
}

impl ClassKey {
    /// The key as an ordered value (locations compare by file, line and column).
    fn ordered(&self) -> (Kind, &'static str, &'static str, u32, u32) {
        (self.kind, self.type_name, self.site.file(), self.site.line(), self.site.column())
    }
}

impl fmt::Display for ClassKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}<{}> (created at {})", self.kind.name(), self.type_name, self.site)
    }
}

/// A lock (or pseudo-lock) the thread holds.
#[derive(Clone, Copy)]
struct Held {
    /// The lock's address: which lock, for the recursion check.
    instance: usize,
    class: ClassId,
    /// Where it was acquired (`None` for a callback's pseudo-lock).
    at: Option<&'static Location<'static>>,
}

/// How an edge `from -> to` was first seen.
#[derive(Clone)]
struct Dep {
    /// The driver callback the thread was running.
    context: Context,
    /// Where `from` had been acquired.
    from_at: Option<&'static Location<'static>>,
    /// Where `to` was acquired or waited for.
    to_at: Option<&'static Location<'static>>,
    /// `Some(what)` for a wait for `to`'s callback (`WorkItem::flush`, ...).
    wait: Option<&'static str>,
}

/// The driver callback a thread runs, or none.
#[derive(Clone, Debug)]
struct Context(Option<Callback>, Option<String>);

impl Context {
    fn current() -> Self {
        let callback = CALLBACK.try_with(Cell::get).ok().flatten();
        let name =
            if callback.is_none() { thread::current().name().map(String::from) } else { None };
        Context(callback, name)
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, &self.1) {
            (Some(callback), _) => f.write_str(callback.kmdf_name()),
            (None, Some(name)) if name.starts_with("kmdf-worker-") => {
                write!(f, "a system worker thread ({name}) outside any driver callback")
            }
            (None, _) => f.write_str("the test thread"),
        }
    }
}

local! {
    static HELD: RefCell<Vec<Held>> = RefCell::new(Vec::new());
}
local! {
    static CALLBACK: Cell<Option<Callback>> = Cell::new(None);
}
local! {
    /// Edges this thread has checked already (they are in the graph for good): a
    /// direct-mapped cache, so that the nested acquisitions a thread repeats cost a lookup.
    static KNOWN: RefCell<KnownEdges> = RefCell::new(KnownEdges([0; KNOWN_SLOTS]));
}

const KNOWN_SLOTS: usize = 256;

/// A cache of edges known to be in the graph; an edge evicted by another one is looked up
/// in the graph again.
struct KnownEdges([u64; KNOWN_SLOTS]);

impl KnownEdges {
    /// The edge packed in a `u64`, plus one (0 is an empty slot), and its slot.
    fn slot(from: ClassId, to: ClassId) -> (u64, usize) {
        let packed = ((u64::from(from) << 32) | u64::from(to)).wrapping_add(1);
        let hash = packed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56;
        (packed, usize::try_from(hash).unwrap_or(0) % KNOWN_SLOTS)
    }

    fn contains(&self, from: ClassId, to: ClassId) -> bool {
        let (packed, slot) = Self::slot(from, to);
        self.0[slot] == packed
    }

    fn insert(&mut self, from: ClassId, to: ClassId) {
        let (packed, slot) = Self::slot(from, to);
        self.0[slot] = packed;
    }
}

/// The order graph, over classes.
struct Graph {
    classes: Vec<ClassKey>,
    index: BTreeMap<(Kind, &'static str, &'static str, u32, u32), ClassId>,
    /// Each edge with how it was first seen.
    edges: BTreeMap<(ClassId, ClassId), Dep>,
    /// The classes acquired after each class (the edges, by their tail).
    after: Vec<Vec<ClassId>>,
}

static GRAPH: Mutex<Graph> = Mutex::new(Graph::new());

fn lock_graph() -> std::sync::MutexGuard<'static, Graph> {
    GRAPH.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Graph {
    const fn new() -> Self {
        Self {
            classes: Vec::new(),
            index: BTreeMap::new(),
            edges: BTreeMap::new(),
            after: Vec::new(),
        }
    }

    fn register(&mut self, key: ClassKey) -> ClassId {
        if let Some(&class) = self.index.get(&key.ordered()) {
            return class;
        }
        let class =
            ClassId::try_from(self.classes.len()).expect("fewer than 4 billion lock classes");
        self.classes.push(key);
        self.after.push(Vec::new());
        self.index.insert(key.ordered(), class);
        class
    }

    /// Adds `from -> to` unless it closes a cycle; then returns the path `to -> ... -> from`
    /// already in the graph, as its edges.
    fn add(&mut self, from: ClassId, to: ClassId, dep: Dep) -> Result<(), Vec<(ClassId, ClassId)>> {
        if self.edges.contains_key(&(from, to)) {
            return Ok(());
        }
        if let Some(path) = self.path(to, from) {
            return Err(path);
        }
        self.edges.insert((from, to), dep);
        self.after[from as usize].push(to);
        Ok(())
    }

    /// A shortest path of edges from `start` to `goal` (breadth first), if any.
    fn path(&self, start: ClassId, goal: ClassId) -> Option<Vec<(ClassId, ClassId)>> {
        let mut came_from: BTreeMap<ClassId, ClassId> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(class) = queue.pop_front() {
            if class == goal {
                let mut path = Vec::new();
                let mut at = goal;
                while at != start {
                    let previous = came_from[&at];
                    path.push((previous, at));
                    at = previous;
                }
                path.reverse();
                return Some(path);
            }
            for &next in &self.after[class as usize] {
                if next != start && !came_from.contains_key(&next) {
                    came_from.insert(next, class);
                    queue.push_back(next);
                }
            }
        }
        None
    }

    /// One edge as a line of a report: the one being added (`now`), or one seen before.
    fn describe(&self, from: ClassId, to: ClassId, dep: &Dep, now: bool) -> String {
        let (from_key, to_key) = (self.classes[from as usize], self.classes[to as usize]);
        let mut line = std::format!("in {}: ", dep.context);
        if from_key.kind.is_callback() {
            let _ = write!(line, "running the callback of {from_key}, ");
        } else {
            let _ = write!(line, "holding {from_key}");
            if let Some(at) = dep.from_at {
                // Inside the parenthesis of the creation site.
                line.pop();
                let _ = write!(line, ", acquired at {at})");
            }
            line.push_str(", ");
        }
        if let Some(what) = dep.wait {
            let verb = if now { "waits" } else { "waited" };
            let _ = write!(line, "{verb} for the callback of {to_key} ({what}");
            if let Some(at) = dep.to_at {
                let _ = write!(line, " at {at}");
            }
            line.push(')');
        } else {
            let verb = if now { "acquires" } else { "acquired" };
            let _ = write!(line, "{verb} {to_key}");
            if let Some(at) = dep.to_at {
                let _ = write!(line, " at {at}");
            }
        }
        line
    }

    /// The report of the inversion the new edge `from -> to` would close over `path`.
    fn report(&self, from: ClassId, to: ClassId, dep: &Dep, path: &[(ClassId, ClassId)]) -> String {
        let mut report = String::from(
            "kmdf lockdep: possible deadlock (lock-order inversion), reported before it \
             happens:\n  now ",
        );
        report.push_str(&self.describe(from, to, dep, true));
        report.push_str(";\n  but earlier (the opposite order):");
        for &(a, b) in path {
            report.push_str("\n    ");
            report.push_str(&self.describe(a, b, &self.edges[&(a, b)], false));
        }
        report.push_str(
            ".\nThreads taking these paths at the same time wait for each other forever: take \
             the locks in one order everywhere, and do not wait for a work item or timer while \
             holding a lock its callback takes.",
        );
        report
    }
}

/// Marks the calling thread as running the driver's `callback` until the guard is dropped
/// (at the callback boundary), for the messages.
pub(crate) fn enter(callback: Callback) -> InCallback {
    InCallback(CALLBACK.replace(Some(callback)))
}

/// Restores the callback the thread ran before; see [`enter`].
pub(crate) struct InCallback(Option<Callback>);

impl Drop for InCallback {
    fn drop(&mut self) {
        CALLBACK.set(self.0);
    }
}

/// Checks the edges from every lock the thread holds to `map`'s class, adding the new ones.
///
/// # Panics
///
/// With the report, when one of them closes a cycle (it is not added).
fn check_order(
    map: &LockMap,
    instance: usize,
    at: Option<&'static Location<'static>>,
    wait: Option<&'static str>,
) -> ClassId {
    let class = map.class();
    let report = HELD.with_borrow(|held| {
        if held.is_empty() {
            return None;
        }
        KNOWN.with_borrow_mut(|known| {
            let mut graph = None;
            for h in held {
                if h.class == class || h.instance == instance || known.contains(h.class, class) {
                    continue;
                }
                let graph = graph.get_or_insert_with(lock_graph);
                let dep = Dep { context: Context::current(), from_at: h.at, to_at: at, wait };
                match graph.add(h.class, class, dep.clone()) {
                    Ok(()) => {
                        known.insert(h.class, class);
                    }
                    Err(path) => return Some(graph.report(h.class, class, &dep, &path)),
                }
            }
            None
        })
    });
    if let Some(report) = report {
        panic!("{report}");
    }
    class
}

/// Before a blocking acquisition of the lock at `instance` (its address), at `at`.
///
/// # Panics
///
/// When the thread holds that lock already (it would hang forever), or when the
/// acquisition inverts an order seen before (see the module docs). Nothing is recorded then.
pub(crate) fn acquire(map: &LockMap, instance: usize, at: &'static Location<'static>) {
    let entry = Held { instance, class: map.class(), at: Some(at) };
    // The common case, kept short: no other lock held, so nothing to check.
    let pushed = HELD.with_borrow_mut(|held| {
        let empty = held.is_empty();
        if empty {
            held.push(entry);
        }
        empty
    });
    if !pushed {
        acquire_nested(map, entry);
    }
}

/// [`acquire`] while the thread holds other locks: the recursion and order checks.
#[inline(never)]
fn acquire_nested(map: &LockMap, entry: Held) {
    let Held { instance, class, at } = entry;
    // Recursion, or every edge known already (then the lock is taken), or a new edge.
    let checked = HELD.with_borrow_mut(|held| {
        if let Some(mine) = held.iter().find(|h| h.instance == instance) {
            return Err(*mine);
        }
        let known = KNOWN.with_borrow(|known| {
            held.iter().all(|h| h.class == class || known.contains(h.class, class))
        });
        if known {
            held.push(entry);
        }
        Ok(known)
    });
    match checked {
        Err(mine) => recursion(map, mine, at),
        Ok(true) => {}
        Ok(false) => {
            check_order(map, instance, at, None);
            push(entry);
        }
    }
}

#[cold]
fn recursion(map: &LockMap, held: Held, at: Option<&'static Location<'static>>) -> ! {
    let held_at = held.at.map_or_else(String::new, |at| std::format!(" (acquired at {at})"));
    let at = at.map_or_else(String::new, |at| std::format!(" at {at}"));
    panic!(
        "kmdf lockdep: recursive acquisition of {map} in {}: this thread already holds \
         it{held_at} and acquiring it again{at} would wait for itself forever (KMDF's verifier \
         stops here too: WDF_RECURSIVE_LOCK). Drop the guard before locking again.",
        Context::current(),
    );
}

/// After a try-lock took the lock at `instance`: it is held from now on, but the
/// acquisition could not wait, so no order is checked.
pub(crate) fn acquired_without_wait(
    map: &LockMap,
    instance: usize,
    at: &'static Location<'static>,
) {
    let class = map.class();
    push(Held { instance, class, at: Some(at) });
}

/// The lock at `instance` was released.
pub(crate) fn release(instance: usize) {
    // `try_with`: a guard dropped while the thread's locals are torn down has nothing to do.
    let _ = HELD.try_with(|held| {
        let mut held = held.borrow_mut();
        // Usually the last one taken; guards may also be dropped out of order.
        if held.last().is_some_and(|h| h.instance == instance) {
            held.pop();
        } else if let Some(index) = held.iter().rposition(|h| h.instance == instance) {
            held.remove(index);
        }
    });
}

fn push(entry: Held) {
    HELD.with_borrow_mut(|held| held.push(entry));
}

/// Before the thread waits for the callback of the work item or timer at `instance`: the
/// wait depends on everything that callback takes, so it counts as acquiring the
/// callback's pseudo-lock for a moment. `what` names the wait for the report
/// (`WorkItem::flush`); `at` is where it was called, when known.
///
/// Call it before every wait for a driver callback, whether or not the callback is running
/// now: the point is to see the order before it deadlocks. Called from inside that
/// callback, it does nothing: such a call does not wait for the run it is made from.
///
/// # Panics
///
/// When the wait inverts an order seen before (see the module docs).
pub(crate) fn wait_for(
    map: &LockMap,
    instance: usize,
    what: &'static str,
    at: Option<&'static Location<'static>>,
) {
    // From inside the awaited callback nothing waits for this run (a flush fails with
    // STATUS_POSSIBLE_DEADLOCK, a deletion completes when the callback returns): no order.
    if HELD.with_borrow(|held| held.iter().any(|h| h.instance == instance)) {
        return;
    }
    check_order(map, instance, at, Some(what));
}

/// Marks the calling thread as running the callback of the work item or timer at `instance`
/// until the guard is dropped: what it acquires meanwhile, a wait for it depends on.
///
/// # Panics
///
/// When the thread holds locks that the callback's waiters were seen to hold (the callback
/// would then wait for itself).
pub(crate) fn running(map: &LockMap, instance: usize) -> Running {
    let class = check_order(map, instance, None, None);
    push(Held { instance, class, at: None });
    Running(instance)
}

/// A callback's pseudo-lock, held while it runs; see [`running`].
pub(crate) struct Running(usize);

impl Drop for Running {
    fn drop(&mut self) {
        release(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// A fresh class per call site (`#[track_caller]`), so tests in parallel share none.
    #[track_caller]
    fn map(kind: Kind) -> LockMap {
        LockMap::new(kind, "lockdep::tests::T", Location::caller())
    }

    fn id(map: &LockMap) -> usize {
        std::ptr::from_ref(map) as usize
    }

    #[track_caller]
    fn lock(map: &LockMap) {
        acquire(map, id(map), Location::caller());
    }

    fn panic_message(run: impl FnOnce()) -> Option<String> {
        let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).err()?;
        Some(
            payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| String::from(*payload.downcast_ref::<&str>().unwrap())),
        )
    }

    #[test]
    #[allow(clippy::many_single_char_names, reason = "classes named like the edges they form")]
    fn a_path_is_found_through_several_edges_and_is_shortest() {
        let mut graph = Graph::new();
        let dep = Dep { context: Context(None, None), from_at: None, to_at: None, wait: None };
        let site = Location::caller();
        let classes: Vec<ClassId> = (0..5)
            .map(|n| {
                graph.register(ClassKey {
                    kind: Kind::SpinLock,
                    type_name: ["a", "b", "c", "d", "e"][n],
                    site,
                })
            })
            .collect();
        let [a, b, c, d, e] = classes[..] else { unreachable!() };
        assert_eq!(graph.register(ClassKey { kind: Kind::SpinLock, type_name: "a", site }), a);
        for (from, to) in [(a, b), (b, c), (c, d), (a, d)] {
            assert!(graph.add(from, to, dep.clone()).is_ok());
        }
        assert_eq!(graph.path(a, d), Some(std::vec![(a, d)]), "breadth first: the direct edge");
        assert_eq!(graph.path(b, d), Some(std::vec![(b, c), (c, d)]));
        assert_eq!(graph.path(d, a), None);
        assert_eq!(graph.path(e, a), None);
        // d -> b closes b -> c -> d; d -> e does not close anything.
        assert_eq!(graph.add(d, b, dep.clone()), Err(std::vec![(b, c), (c, d)]));
        assert!(!graph.edges.contains_key(&(d, b)), "the closing edge is not added");
        assert!(graph.add(d, e, dep.clone()).is_ok());
        assert_eq!(graph.add(e, a, dep.clone()), Err(std::vec![(a, d), (d, e)]));
        // An edge already present is accepted again without a search.
        assert!(graph.add(a, b, dep).is_ok());
    }

    #[test]
    fn the_same_order_twice_is_not_reported() {
        let (a, b) = (map(Kind::SpinLock), map(Kind::WaitLock));
        for _ in 0..2 {
            lock(&a);
            lock(&b);
            release(id(&b));
            release(id(&a));
        }
        HELD.with_borrow(|held| assert!(held.is_empty()));
    }

    #[test]
    fn an_inversion_is_reported_with_both_paths_on_another_thread_too() {
        let (a, b) = (map(Kind::WaitLock), map(Kind::WaitLock));
        std::thread::scope(|scope| {
            scope.spawn(|| {
                lock(&a);
                lock(&b);
                release(id(&b));
                release(id(&a));
            });
        });
        lock(&b);
        let message = panic_message(|| lock(&a)).expect("B then A after A then B is reported");
        assert!(message.contains("possible deadlock"), "{message}");
        // "holding <class> (created at <site>, acquired at <site>)"
        let holding = |map: &LockMap| {
            let class = std::format!("{}", map.key);
            std::format!("holding {}, acquired at", &class[..class.len() - 1])
        };
        assert!(message.contains(&holding(&b)), "{message}");
        assert!(message.contains(&std::format!("acquires {}", a.key)), "{message}");
        assert!(message.contains(&holding(&a)), "{message}");
        assert!(message.contains("in the test thread"), "{message}");
        // The failed acquisition recorded nothing: only B is held, and the report repeats.
        HELD.with_borrow(|held| assert_eq!(held.len(), 1));
        assert!(panic_message(|| lock(&a)).is_some());
        release(id(&b));
        // Alone, A is fine.
        lock(&a);
        release(id(&a));
    }

    #[test]
    fn recursion_is_reported_with_the_callback() {
        let a = map(Kind::SpinLock);
        let callback = enter(Callback::SelfManagedIoSuspend);
        lock(&a);
        let message = panic_message(|| lock(&a)).expect("recursion panics");
        assert!(
            message.contains("recursive acquisition of SpinLock<lockdep::tests::T>"),
            "{message}"
        );
        assert!(message.contains("in EvtDeviceSelfManagedIoSuspend"), "{message}");
        release(id(&a));
        drop(callback);
        assert_eq!(CALLBACK.get(), None);
    }

    #[test]
    fn a_wait_counts_as_acquiring_the_callbacks_pseudo_lock() {
        // The work item's callback takes L; later a thread holding L flushes the item.
        let (l, item) = (map(Kind::WaitLock), map(Kind::WorkItem));
        {
            let _run = running(&item, id(&item));
            lock(&l);
            release(id(&l));
        }
        lock(&l);
        let message = panic_message(|| wait_for(&item, id(&item), "WorkItem::flush", None))
            .expect("holding L while waiting for a callback that takes L is reported");
        assert!(message.contains("waits for the callback of WorkItem<"), "{message}");
        assert!(message.contains("running the callback of WorkItem<"), "{message}");
        release(id(&l));
        // Without L held, the wait is fine.
        wait_for(&item, id(&item), "WorkItem::flush", None);
    }

    #[test]
    fn a_timer_wait_then_the_callback_taking_the_lock_is_reported_in_the_callback() {
        let (l, timer) = (map(Kind::WaitLock), map(Kind::Timer));
        lock(&l);
        wait_for(&timer, id(&timer), "Timer::stop(wait)", None);
        release(id(&l));
        let _run = running(&timer, id(&timer));
        let message = panic_message(|| lock(&l)).expect("the second order is reported");
        assert!(message.contains("Timer::stop(wait)"), "{message}");
    }

    #[test]
    fn locks_of_one_class_nest_without_an_edge() {
        // Two instances of one class (one creation site): no self-edge, no report.
        let maps: Vec<LockMap> = (0..2).map(|_| map(Kind::SpinLock)).collect();
        lock(&maps[0]);
        lock(&maps[1]);
        release(id(&maps[1]));
        release(id(&maps[0]));
        lock(&maps[1]);
        lock(&maps[0]);
        release(id(&maps[0]));
        release(id(&maps[1]));
    }
}
