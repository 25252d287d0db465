//! One inotify instance for all execution directories, waking the matching tailer. Falls back to
//! polling (the tailer's timeout) when inotify is unavailable.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use inotify::{Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::Notify;

/// Wakes tailers when files in their directory change.
pub(crate) struct DirWatcher {
    watches: Option<Mutex<Watches>>,
    targets: Arc<Mutex<HashMap<WatchDescriptor, Arc<Notify>>>>,
}

impl DirWatcher {
    pub(crate) fn new() -> DirWatcher {
        let targets: Arc<Mutex<HashMap<WatchDescriptor, Arc<Notify>>>> = Arc::default();
        let watches = match Inotify::init() {
            Ok(mut ino) => {
                let watches = ino.watches();
                let t = targets.clone();
                std::thread::Builder::new()
                    .name("runvoy-inotify".into())
                    .spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let Ok(events) = ino.read_events_blocking(&mut buf) else {
                                return;
                            };
                            let map = t.lock().expect("watch map");
                            for ev in events {
                                if let Some(n) = map.get(&ev.wd) {
                                    n.notify_one();
                                }
                            }
                        }
                    })
                    .ok()
                    .map(|_| Mutex::new(watches))
            }
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable; tailing by polling");
                None
            }
        };
        DirWatcher { watches, targets }
    }

    /// Watches `dir`; the returned guard removes the watch when dropped.
    pub(crate) fn watch(&self, dir: &Path, notify: Arc<Notify>) -> Option<WatchGuard<'_>> {
        let watches = self.watches.as_ref()?;
        let wd = watches
            .lock()
            .expect("watches")
            .add(
                dir,
                WatchMask::MODIFY
                    | WatchMask::CLOSE_WRITE
                    | WatchMask::MOVED_TO
                    | WatchMask::CREATE,
            )
            .ok()?;
        self.targets
            .lock()
            .expect("watch map")
            .insert(wd.clone(), notify);
        Some(WatchGuard { owner: self, wd })
    }
}

/// Removes a watch on drop.
pub(crate) struct WatchGuard<'a> {
    owner: &'a DirWatcher,
    wd: WatchDescriptor,
}

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        self.owner
            .targets
            .lock()
            .expect("watch map")
            .remove(&self.wd);
        if let Some(w) = &self.owner.watches {
            let _ = w.lock().expect("watches").remove(self.wd.clone());
        }
    }
}
