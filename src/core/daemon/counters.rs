//! The application's own numbers in a daemon's status and metrics: counters
//! (`$daemon->count('messages', ['class' => ..., 'outcome' => 'handled'])`) and duration histograms
//! (`$daemon->observe('message', 0.25, [...])`), kept by name and label set. The Messenger consumer
//! counts its messages by class and outcome here. Bounded: a daemon keeps at most [`MAX_SERIES`]
//! label sets, so a label made from unbounded data (an id) fails loudly instead of growing forever.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::plan::DURATION_BUCKETS;

/// Label sets kept per daemon, all names together.
pub const MAX_SERIES: usize = 10_000;
const MAX_LABELS: usize = 8;
const MAX_LABEL_VALUE: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// One label set of one name, as status shows it.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// A counter's value, or a histogram's number of observations.
    pub count: u64,
    /// A histogram's buckets (per bucket of the duration buckets, +Inf last) and sum of seconds;
    /// empty and 0 for a counter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<u64>,
    #[serde(default)]
    pub sum: f64,
}

#[derive(Debug, Default)]
pub struct Counters {
    kinds: BTreeMap<String, Kind>,
    series: BTreeMap<(String, Vec<(String, String)>), Series>,
}

impl Counters {
    /// Adds `by` to counter `name` with `labels`.
    pub fn count(
        &mut self,
        name: &str,
        labels: Vec<(String, String)>,
        by: u64,
    ) -> Result<(), String> {
        let s = self.entry(name, labels, Kind::Counter)?;
        s.count = s.count.saturating_add(by);
        Ok(())
    }

    /// Records one duration of `seconds` in histogram `name` with `labels`.
    pub fn observe(
        &mut self,
        name: &str,
        labels: Vec<(String, String)>,
        seconds: f64,
    ) -> Result<(), String> {
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(format!(
                "seconds must be a finite number ≥ 0, {seconds} given"
            ));
        }
        let s = self.entry(name, labels, Kind::Histogram)?;
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        s.buckets[bucket] += 1;
        s.count += 1;
        s.sum += seconds;
        Ok(())
    }

    pub fn series(&self) -> Vec<Series> {
        self.series.values().cloned().collect()
    }

    fn entry(
        &mut self,
        name: &str,
        mut labels: Vec<(String, String)>,
        kind: Kind,
    ) -> Result<&mut Series, String> {
        check_name(name, "name")?;
        if labels.len() > MAX_LABELS {
            return Err(format!(
                "at most {MAX_LABELS} labels, {} given",
                labels.len()
            ));
        }
        for (k, v) in &labels {
            check_name(k, "label name")?;
            if k == "daemon" || k == "le" {
                return Err(format!("label name \"{k}\" is Forklift's own; use another"));
            }
            if v.len() > MAX_LABEL_VALUE {
                return Err(format!(
                    "label {k}: at most {MAX_LABEL_VALUE} bytes, {} given",
                    v.len()
                ));
            }
        }
        labels.sort();
        if labels.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err("a label name is given twice".into());
        }
        match self.kinds.get(name) {
            Some(k) if *k != kind => {
                return Err(format!(
                    "\"{name}\" is a {}: it cannot also be a {}",
                    k.name(),
                    kind.name()
                ))
            }
            _ => {}
        }
        let key = (name.to_string(), labels);
        if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
            return Err(format!(
                "the daemon keeps at most {MAX_SERIES} label sets (a label made from unbounded \
                 data, such as an id, would grow without end)"
            ));
        }
        self.kinds.insert(name.to_string(), kind);
        let buckets = match kind {
            Kind::Counter => Vec::new(),
            Kind::Histogram => vec![0; DURATION_BUCKETS.len() + 1],
        };
        Ok(self.series.entry(key.clone()).or_insert_with(|| Series {
            name: key.0,
            labels: key.1,
            buckets,
            ..Default::default()
        }))
    }
}

/// Names as Prometheus takes them, lower case: `[a-z_][a-z0-9_]*`, at most 64 bytes.
fn check_name(name: &str, what: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} \"{}\" must be lower-case letters, digits and _ (not first a digit), at most 64 bytes",
            name.escape_debug()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn counts_by_label_set_whatever_the_order() {
        let mut c = Counters::default();
        c.count("messages", l(&[("class", "A"), ("outcome", "ok")]), 1)
            .unwrap();
        c.count("messages", l(&[("outcome", "ok"), ("class", "A")]), 2)
            .unwrap();
        c.count("messages", l(&[("class", "B"), ("outcome", "ok")]), 1)
            .unwrap();
        let s = c.series();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels, l(&[("class", "A"), ("outcome", "ok")]));
        assert_eq!(s[0].count, 3);
        assert_eq!(s[1].count, 1);
    }

    #[test]
    fn histograms_bucket_and_sum() {
        let mut c = Counters::default();
        c.observe("message", l(&[]), 0.005).unwrap();
        c.observe("message", l(&[]), 2.0).unwrap();
        c.observe("message", l(&[]), 7200.0).unwrap();
        let s = &c.series()[0];
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[5], 1); // <= 5.0
        assert_eq!(s.buckets[DURATION_BUCKETS.len()], 1);
        assert!((s.sum - 7202.005).abs() < 1e-9);
    }

    #[test]
    fn refuses_bad_names_mixed_kinds_and_unbounded_labels() {
        let mut c = Counters::default();
        assert!(c
            .count("Messages", l(&[]), 1)
            .unwrap_err()
            .contains("lower-case"));
        assert!(c.count("9x", l(&[]), 1).is_err());
        assert!(c
            .count("m", l(&[("daemon", "x")]), 1)
            .unwrap_err()
            .contains("Forklift's own"));
        assert!(c
            .count("m", l(&[("a", "1"), ("a", "2")]), 1)
            .unwrap_err()
            .contains("twice"));
        assert!(c.observe("m", l(&[]), f64::NAN).is_err());
        c.count("m", l(&[]), 1).unwrap();
        assert!(c
            .observe("m", l(&[]), 1.0)
            .unwrap_err()
            .contains("is a counter"));
        for i in 1..MAX_SERIES {
            c.count("ids", l(&[("id", &i.to_string())]), 1).unwrap();
        }
        let e = c.count("ids", l(&[("id", "x")]), 1).unwrap_err();
        assert!(e.contains("10000 label sets"), "{e}");
        // A known label set still counts at the limit.
        c.count("ids", l(&[("id", "1")]), 1).unwrap();
    }
}
