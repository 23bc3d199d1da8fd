//! The runtime's trace as a test reads it: recording switched off and on
//! (`Runtime::set_tracing`), and entries taken by `Runtime::take_trace` while the callback
//! they record is still running. Entries are numbered from the start of the runtime, so a
//! callback that returns after its entry was taken updates no other entry.

use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::Duration;

use kmdf::host::{NodeState, PnpAction, Runtime};
use kmdf::{Device, DeviceInit, Driver, NtError, PnpPowerCallbacks, Result};

/// The hang guard: far longer than any of these tests takes.
const TIMEOUT: Duration = Duration::from_secs(20);

struct Gated;

impl Driver for Gated {
    fn driver_entry() -> Result<Self> {
        Ok(Gated)
    }

    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        device_init.create(Gate::default())?;
        Ok(())
    }
}

/// A device that vetoes every query-remove; when the test set its gate, the veto first
/// says it started and waits for the test to let it go.
#[derive(Default)]
struct Gate {
    entered: Mutex<Option<Sender<()>>>,
    go: Mutex<Option<Receiver<()>>>,
}

kmdf::vtable! {
    impl PnpPowerCallbacks for Gate {
        fn query_remove(&self, _device: &Device<Self>) -> Result {
            let entered = self.entered.lock().unwrap().take();
            if let Some(entered) = entered {
                entered.send(()).unwrap();
                let go = self.go.lock().unwrap().take().expect("a gate has both ends");
                go.recv_timeout(TIMEOUT).expect("the test lets the veto go");
            }
            Err(NtError::UNSUCCESSFUL)
        }
    }
}

const VETO: &str = "EvtDeviceQueryRemove -> STATUS_UNSUCCESSFUL";

#[test]
fn with_tracing_off_callbacks_run_and_nothing_is_recorded() {
    let runtime = Runtime::new();
    runtime.set_tracing(false);
    let driver = runtime.load::<Gated>().unwrap();
    let node = driver.add_device().unwrap();
    node.start().unwrap();
    // The veto ran (docs/kmdf-behaviour.md section 1, "query-remove refused": the device stays
    // started), and nothing was recorded.
    node.apply(PnpAction::QueryRemove).unwrap();
    assert_eq!(node.state(), NodeState::Working);
    assert!(runtime.trace().is_empty(), "{}", runtime.trace());

    runtime.set_tracing(true);
    node.apply(PnpAction::QueryRemove).unwrap();
    assert_eq!(runtime.trace().lines(), [VETO]);
    assert_eq!(node.trace().lines(), [VETO]);
}

#[test]
fn a_callback_returning_after_its_entry_was_taken_updates_no_other_entry() {
    let runtime = Runtime::new();
    let driver = runtime.load::<Gated>().unwrap();
    let node = driver.add_device().unwrap();
    node.start().unwrap();
    let _ = runtime.take_trace();

    let (entered_tx, entered) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    node.with_context(|gate: &Gate| {
        *gate.entered.lock().unwrap() = Some(entered_tx);
        *gate.go.lock().unwrap() = Some(go_rx);
    })
    .unwrap();
    thread::scope(|scope| {
        let veto = scope.spawn(|| node.apply(PnpAction::QueryRemove));
        entered.recv_timeout(TIMEOUT).expect("the veto starts");
        // Taken while the callback runs: its status is not known yet.
        assert_eq!(runtime.take_trace().lines(), ["EvtDeviceQueryRemove"]);
        // A new entry, in the place the taken one had in the trace.
        let other = driver.add_device().unwrap();
        go.send(()).unwrap();
        assert_eq!(veto.join().unwrap(), Ok(()));
        // The veto's status went nowhere: the new entry keeps its own.
        assert_eq!(runtime.trace().lines(), ["EvtDriverDeviceAdd"]);
        assert_eq!(other.trace().lines(), ["EvtDriverDeviceAdd"]);
    });
    assert_eq!(node.state(), NodeState::Working);
}
