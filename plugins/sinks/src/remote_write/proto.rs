//! The Prometheus remote-write 1.0 wire messages (`prometheus.WriteRequest` of
//! `prompb/remote.proto` and `prompb/types.proto`), derived with `prost` so no protoc
//! is needed. Only the fields of protocol 1.0 are declared; field numbers are the
//! upstream ones.

/// `prometheus.WriteRequest`. Field 2 is reserved upstream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`: labels sorted by name, samples in timestamp order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `prometheus.MetricMetadata.MetricType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Unknown = 0,
    Counter = 1,
    Gauge = 2,
    Histogram = 3,
    Gaugehistogram = 4,
    Summary = 5,
    Info = 6,
    Stateset = 7,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn concatenated_requests_decode_as_one() {
        // The buffer relies on protobuf's merge rule: two encoded requests put end to
        // end are one request with both lists of series.
        let one = |v: f64| WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "x".into(),
                }],
                samples: vec![Sample {
                    value: v,
                    timestamp: 1,
                }],
            }],
            metadata: vec![],
        };
        let mut bytes = one(1.0).encode_to_vec();
        bytes.extend(one(2.0).encode_to_vec());
        let both = WriteRequest::decode(&bytes[..]).unwrap();
        assert_eq!(both.timeseries.len(), 2);
        assert_eq!(both.timeseries[1].samples[0].value, 2.0);
    }

    #[test]
    fn wire_bytes_match_the_upstream_schema() {
        // Hand-checked encoding: field 1 (timeseries) → field 1 (label) name/value,
        // field 2 (sample) double value (tag 1, fixed64) and int64 timestamp (tag 2).
        let r = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "a".into(),
                    value: "b".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 5,
                }],
            }],
            metadata: vec![MetricMetadata {
                r#type: MetricType::Counter as i32,
                metric_family_name: "c".into(),
                help: "h".into(),
                unit: String::new(),
            }],
        };
        let b = r.encode_to_vec();
        let expected: Vec<u8> = vec![
            0x0a, 0x15, // timeseries, 21 bytes
            0x0a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b', // label a=b
            0x12, 0x0b, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0x05, // sample 1.0 @5
            0x1a, 0x08, 0x08, 0x01, 0x12, 0x01, b'c', 0x22, 0x01, b'h', // metadata
        ];
        assert_eq!(b, expected);
    }
}
