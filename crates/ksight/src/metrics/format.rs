//! Which exposition a scrape gets, negotiated from its Accept header by q-values.
//!
//! Text 0.0.4 is the default: for no header, for wildcards (curl sends `*/*`) and for
//! anything we cannot write. OpenMetrics and the protobuf format are only given to a scraper
//! that names them, and then the highest q wins. Prometheus 2.42 with
//! `--enable-feature=native-histograms` lists the protobuf first (implicit q=1) and
//! OpenMetrics at q=0.8; without the flag it lists OpenMetrics first.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text004,
    OpenMetrics,
    /// Length-delimited `io.prometheus.client.MetricFamily` messages (native histograms).
    Protobuf,
}

/// Our formats by preference when a scraper gives two of them the same q: the richer first.
const PREFERENCE: [Format; 3] = [Format::Protobuf, Format::OpenMetrics, Format::Text004];

impl Format {
    pub const TEXT_CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";
    pub const OPENMETRICS_CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";
    pub const PROTOBUF_CONTENT_TYPE: &'static str = "application/vnd.google.protobuf; \
         proto=io.prometheus.client.MetricFamily; encoding=delimited";

    /// The format a scraper sending `accept` prefers among ours.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let ranges: Vec<MediaRange> = accept
            .unwrap_or_default()
            .split(',')
            .filter_map(MediaRange::parse)
            .collect();
        let mut best = (Format::Text004, 0.0);
        for format in PREFERENCE {
            let q = format.quality(&ranges);
            if q > best.1 {
                best = (format, q);
            }
        }
        best.0
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text004 => Self::TEXT_CONTENT_TYPE,
            Format::OpenMetrics => Self::OPENMETRICS_CONTENT_TYPE,
            Format::Protobuf => Self::PROTOBUF_CONTENT_TYPE,
        }
    }

    /// The q of the most specific range matching this format (RFC 9110 §12.5.1); 0 if none.
    fn quality(self, ranges: &[MediaRange]) -> f32 {
        ranges
            .iter()
            .filter_map(|r| r.specificity(self).map(|s| (s, r.q)))
            .fold(None, |best: Option<(u8, f32)>, (s, q)| match best {
                Some((bs, _)) if bs >= s => best,
                _ => Some((s, q)),
            })
            .map_or(0.0, |(_, q)| q)
    }
}

/// One element of an Accept header: `type/subtype;param=value;q=0.5`.
struct MediaRange<'a> {
    mime: &'a str,
    params: Vec<(&'a str, &'a str)>,
    q: f32,
}

impl<'a> MediaRange<'a> {
    /// None for an empty element or a malformed q (such a range is ignored, not trusted).
    fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.split(';').map(str::trim);
        let mime = parts.next().filter(|m| m.contains('/'))?;
        let mut params = Vec::new();
        let mut q = 1.0;
        for (name, value) in parts.filter_map(|p| p.split_once('=')) {
            let (name, value) = (name.trim(), value.trim().trim_matches('"'));
            if name.eq_ignore_ascii_case("q") {
                q = value
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))?;
            } else {
                params.push((name, value));
            }
        }
        Some(MediaRange { mime, params, q })
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// How specifically this range names `format` (2 exact, 1 `text/*`, 0 `*/*`), if at all.
    /// Wildcards only ever match the text format, our default.
    fn specificity(&self, format: Format) -> Option<u8> {
        let is = |m: &str| self.mime.eq_ignore_ascii_case(m);
        match format {
            Format::Protobuf => (is("application/vnd.google.protobuf")
                && self.param("proto") == Some("io.prometheus.client.MetricFamily")
                && self.param("encoding") == Some("delimited"))
            .then_some(2),
            Format::OpenMetrics => is("application/openmetrics-text").then_some(2),
            Format::Text004 if is("text/plain") => Some(2),
            Format::Text004 if is("text/*") => Some(1),
            Format::Text004 if is("*/*") => Some(0),
            Format::Text004 => None,
        }
    }
}

/// Whether a scraper sending `accept_encoding` takes gzip: `gzip` or `*` with a q above 0,
/// unless gzip itself is refused (`gzip;q=0`).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let mut wildcard = false;
    for item in accept_encoding.unwrap_or_default().split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .filter_map(|q| q.trim().parse::<f64>().ok())
            .next_back()
            .unwrap_or(1.0);
        match coding.as_str() {
            "gzip" | "x-gzip" => return q > 0.0,
            "*" => wildcard = q > 0.0,
            _ => {}
        }
    }
    wildcard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_when_the_scraper_takes_it() {
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("identity, gzip;q=0.5"))); // what Prometheus sends
        assert!(accepts_gzip(Some("br, *")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("gzip;q=0, *")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
    }

    proptest::proptest! {
        #[test]
        fn any_accept_encoding(text in ".{0,120}") {
            let _ = accepts_gzip(Some(&text));
        }

        /// Any Accept header a client sends picks a format, and the same one every time.
        #[test]
        fn any_accept_header_picks_a_format(accept in ".{0,300}") {
            let format = Format::from_accept(Some(&accept));
            proptest::prop_assert_eq!(format, Format::from_accept(Some(&accept)));
        }

        #[test]
        fn accept_lists_of_known_types_never_panic(
            parts in proptest::collection::vec(
                ("(text/plain|application/openmetrics-text|application/vnd.google.protobuf|\\*/\\*|[a-z]{1,8}/[a-z*]{1,8})",
                 "(;q=[0-9.]{0,6}|;version=[0-9.]{1,6}|;proto=[a-zA-Z.]{0,40}|;encoding=[a-z]{0,12}|;[^,]{0,20})*"),
                0..8,
            )
        ) {
            let header: Vec<String> = parts.into_iter().map(|(t, p)| format!("{t}{p}")).collect();
            let _ = Format::from_accept(Some(&header.join(", ")));
        }
    }

    /// What Prometheus 2.42.0 sends with `--enable-feature=native-histograms` (captured from
    /// the Debian package scraping a bare listener).
    const PROMETHEUS_2_42_NATIVE: &str = "application/vnd.google.protobuf;\
        proto=io.prometheus.client.MetricFamily;encoding=delimited,\
        application/openmetrics-text;version=1.0.0;q=0.8,\
        application/openmetrics-text;version=0.0.1;q=0.75,\
        text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    /// The same Prometheus without the flag.
    const PROMETHEUS_2_42: &str = "application/openmetrics-text;version=1.0.0,\
        application/openmetrics-text;version=0.0.1;q=0.75,\
        text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    fn pick(accept: &str) -> Format {
        Format::from_accept(Some(accept))
    }

    #[test]
    fn prometheus_with_native_histograms_gets_protobuf() {
        assert_eq!(pick(PROMETHEUS_2_42_NATIVE), Format::Protobuf);
        // The protobuf listed with an explicit q, as other Prometheus versions send it.
        assert_eq!(
            pick(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                 encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
            ),
            Format::Protobuf
        );
    }

    #[test]
    fn prometheus_without_the_flag_gets_openmetrics() {
        assert_eq!(pick(PROMETHEUS_2_42), Format::OpenMetrics);
        assert_eq!(
            pick("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
            Format::OpenMetrics
        );
    }

    #[test]
    fn text_is_the_default_and_wildcards_mean_text() {
        assert_eq!(Format::from_accept(None), Format::Text004);
        assert_eq!(pick(""), Format::Text004);
        assert_eq!(pick("*/*"), Format::Text004);
        assert_eq!(pick("text/plain"), Format::Text004);
        assert_eq!(pick("text/*;q=0.9,application/json"), Format::Text004);
        assert_eq!(pick("image/png"), Format::Text004);
    }

    #[test]
    fn q_values_decide_not_the_order() {
        let proto = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                     encoding=delimited";
        assert_eq!(
            pick(&format!("{proto};q=0.2,text/plain;version=0.0.4;q=0.5")),
            Format::Text004
        );
        assert_eq!(
            pick(&format!(
                "text/plain;q=0.4,application/openmetrics-text;q=0.6,{proto};q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(pick(&format!("{proto};q=0,*/*")), Format::Text004);
        // A most specific range decides its format's q: text/plain refused beats */*.
        assert_eq!(
            pick("text/plain;q=0,*/*;q=1,application/openmetrics-text;q=0.1"),
            Format::OpenMetrics
        );
    }

    #[test]
    fn protobuf_needs_the_delimited_metric_family() {
        for other in [
            "application/vnd.google.protobuf",
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily",
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text",
            "application/vnd.google.protobuf;proto=other.Message;encoding=delimited",
        ] {
            assert_eq!(pick(other), Format::Text004, "{other}");
        }
    }

    #[test]
    fn spaces_case_and_malformed_q() {
        assert_eq!(
            pick(" Application/OpenMetrics-Text ; version=1.0.0 ; Q=0.9 , text/plain;q=0.5"),
            Format::OpenMetrics
        );
        assert_eq!(
            pick("application/openmetrics-text;q=high,text/plain;q=0.1"),
            Format::Text004
        );
        assert_eq!(
            pick("application/openmetrics-text;q=2,text/plain;q=0.1"),
            Format::Text004
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Format::Protobuf.content_type(),
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; \
             encoding=delimited"
        );
        assert!(Format::Text004
            .content_type()
            .starts_with("text/plain; version=0.0.4"));
    }
}
