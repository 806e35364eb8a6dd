//! `snapbackctl watch [ID]`: a live view of snapshot sets from the daemon's signals and
//! PropertiesChanged (no polling).
//!
//! Human: the current table, then one line per event, and a progress bar per running merge
//! on a terminal (without a terminal, merge progress is printed in 10 % steps).
//! JSON: one compact document per line: `{"schema":"snapbackctl/1","event":...}`.

use std::collections::BTreeMap;

use indicatif::ProgressBar;
use serde_json::{json, Map, Value};

use crate::bus::Client;
use crate::cli::Format;
use crate::error::Error;
use crate::events::{Change, Event, Events};
use crate::model::SnapshotView;
use crate::output::progress::{self, Bars};
use crate::output::{json::line, time};
use crate::Outcome;

/// Live state of the watched sets.
#[derive(Debug)]
struct View {
    format: Format,
    /// `watch ID`: the set whose end (removal, merge finished) ends the watch.
    only: Option<u32>,
    sets: BTreeMap<u32, SnapshotView>,
    bars: Bars,
    merge_bars: BTreeMap<u32, ProgressBar>,
    /// Last printed 10 % step per set, when there is no terminal for bars.
    printed_step: BTreeMap<u32, u32>,
}

pub async fn run(client: &Client, format: Format, only: Option<u32>) -> Result<Outcome, Error> {
    // Subscribe first, then read the state: an event in between is seen, not lost.
    let mut events = Events::subscribe(client.connection()).await?;
    let initial = match only {
        Some(id) => vec![client.snapshot(id).await?],
        None => client.snapshots().await?,
    };
    let mut view = View {
        format,
        only,
        sets: initial.into_iter().map(|s| (s.id, s)).collect(),
        bars: Bars::new(),
        merge_bars: BTreeMap::new(),
        printed_step: BTreeMap::new(),
    };
    view.print_initial();
    while let Some(event) = events.next().await {
        let event = event?;
        let Some(id) = event.id() else { continue };
        if only.is_some_and(|o| o != id) {
            continue;
        }
        if let Some(end) = view.handle(client, id, event).await? {
            view.clear_bars();
            return end.map(|()| Outcome::Done);
        }
    }
    view.clear_bars();
    Err(Error::Protocol("the bus connection closed".into()))
}

impl View {
    fn say(&self, text: &str) {
        self.bars.println(text);
    }

    fn print_initial(&mut self) {
        let sets: Vec<SnapshotView> = self.sets.values().cloned().collect();
        match self.format {
            Format::Human => {
                let table = super::list::render_human(&sets, time::now_usec());
                self.say(table.trim_end());
            }
            Format::Json => {
                for s in &sets {
                    self.say(&line(
                        json!({ "event": "existing", "id": s.id, "snapshot": s.to_json() }),
                    ));
                }
            }
        }
        for s in sets.iter().filter(|s| s.state == snapback_dbus::SetState::Merging) {
            self.track_merge(s.id, s.merge_progress);
        }
    }

    /// Shows one event; Some(result) ends the watch (the watched set went away).
    async fn handle(
        &mut self,
        client: &Client,
        id: u32,
        event: Event,
    ) -> Result<Option<Result<(), Error>>, Error> {
        let json = self.format == Format::Json;
        match event {
            Event::Created(path) => {
                // The set may already be gone again; then its removal event follows.
                let Ok(set) = client.read_snapshot(&path).await else { return Ok(None) };
                if json {
                    self.say(&line(
                        json!({ "event": "created", "id": id, "snapshot": set.to_json() }),
                    ));
                } else {
                    self.say(&format!(
                        "snapshot set {id} created: {} \"{}\"",
                        set.volumes.join(", "),
                        set.description
                    ));
                }
                self.sets.insert(id, set);
            }
            Event::Removed(_) => {
                self.sets.remove(&id);
                self.finish_merge(id);
                if json {
                    self.say(&line(json!({ "event": "removed", "id": id })));
                } else {
                    self.say(&format!("snapshot set {id} removed"));
                }
                return Ok(self.watching_one().then_some(Ok(())));
            }
            Event::RollbackScheduled(_) => {
                if json {
                    self.say(&line(json!({ "event": "rollback-scheduled", "id": id })));
                } else {
                    self.say(&format!("snapshot set {id}: rollback scheduled for next boot"));
                }
            }
            Event::MergeFinished { ok, message, .. } => {
                self.finish_merge(id);
                if json {
                    self.say(&line(
                        json!({ "event": "merge-finished", "id": id, "ok": ok, "message": message }),
                    ));
                } else if ok {
                    self.say(&format!("snapshot set {id}: rollback finished"));
                } else {
                    self.say(&format!("snapshot set {id}: rollback failed: {message}"));
                }
                if self.watching_one() {
                    return Ok(Some(if ok {
                        Ok(())
                    } else {
                        Err(Error::MergeFailed { id, message })
                    }));
                }
            }
            Event::Changed { changes, .. } => self.changed(id, &changes),
        }
        Ok(None)
    }

    /// Whether `watch ID` was asked for (then the set's end ends the watch).
    fn watching_one(&self) -> bool {
        // `run` only passes events of that set when one was named.
        self.only.is_some()
    }

    fn changed(&mut self, id: u32, changes: &[Change]) {
        if let Some(set) = self.sets.get_mut(&id) {
            for c in changes {
                c.apply(set);
            }
        }
        if self.format == Format::Json {
            let fields: Map<String, Value> = changes
                .iter()
                .map(|c| {
                    let (k, v) = c.to_json();
                    (k.to_owned(), v)
                })
                .collect();
            self.say(&line(json!({ "event": "changed", "id": id, "changes": fields })));
        }
        for c in changes {
            match c {
                Change::State(state) => {
                    if self.format == Format::Human {
                        self.say(&format!("snapshot set {id}: {state}"));
                    }
                    if *state == snapback_dbus::SetState::Merging {
                        let f = self.sets.get(&id).map_or(0.0, |s| s.merge_progress);
                        self.track_merge(id, f);
                    } else {
                        self.finish_merge(id);
                    }
                }
                Change::MergeProgress(f) => self.progress(id, *f),
                Change::Description(d) if self.format == Format::Human => {
                    self.say(&format!("snapshot set {id}: description \"{d}\""));
                }
                _ => {}
            }
        }
    }

    fn track_merge(&mut self, id: u32, fraction: f64) {
        if self.format == Format::Human && progress::enabled() && !self.merge_bars.contains_key(&id)
        {
            let bar = self.bars.add(format!("rollback {id}"), fraction);
            self.merge_bars.insert(id, bar);
        }
    }

    fn progress(&mut self, id: u32, fraction: f64) {
        if let Some(bar) = self.merge_bars.get(&id) {
            progress::set(bar, fraction);
            return;
        }
        if self.format == Format::Human && !progress::enabled() {
            // No terminal: a line per 10 % step keeps logs readable.
            let step = (fraction.clamp(0.0, 1.0) * 10.0).floor() as u32;
            if self.printed_step.get(&id).is_none_or(|&s| step > s) {
                self.printed_step.insert(id, step);
                self.say(&format!("snapshot set {id}: merged {}%", step * 10));
            }
        }
    }

    fn finish_merge(&mut self, id: u32) {
        if let Some(bar) = self.merge_bars.remove(&id) {
            bar.finish_and_clear();
        }
        self.printed_step.remove(&id);
    }

    fn clear_bars(&mut self) {
        for (_, bar) in std::mem::take(&mut self.merge_bars) {
            bar.finish_and_clear();
        }
    }
}
