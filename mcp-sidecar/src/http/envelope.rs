//! What a JSON-RPC request is, read from a body too large to keep: its `id`, `method` and, for
//! `tools/call`, `params.name`. The oversized body streams past [`EnvelopeScanner::feed`] in
//! chunks of any size while the edge drains it, and the scanner keeps a few small fields and
//! a fixed amount of state, whatever the body's size or nesting. With the id known, the edge
//! can answer the very request the client is waiting for (a tool result for `tools/call`)
//! instead of an anonymous error.
//!
//! Clients put the envelope anywhere: the Python SDK writes `id` before `params`, the
//! TypeScript SDK after it, so the whole body is scanned. Only the top-level object's keys and
//! the keys of its `params` object are looked at; everything deeper is skipped by counting
//! brackets outside strings.

use serde_json::Value;

/// The parts of a JSON-RPC request the edge needs to answer it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Envelope {
    /// The request id (a number or a string), if the body had a usable one.
    pub id: Option<Value>,
    pub method: Option<String>,
    /// `params.name`: the tool of a `tools/call`.
    pub tool: Option<String>,
}

/// The longest field kept (an id, a method or tool name); longer values are treated as absent.
const MAX_FIELD_BYTES: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Id,
    Method,
    Params,
    Name,
    Other,
}

/// Where the text being read sits, for the parts worth keeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Capture {
    /// A key of the top-level object.
    TopKey,
    /// A key of the `params` object.
    ParamsKey,
    /// The value of an interesting field.
    Value(Field),
    Skip,
}

/// Scans a JSON text for its [`Envelope`], a chunk at a time.
#[derive(Debug)]
pub struct EnvelopeScanner {
    /// Nesting depth: 0 before the top-level value, 1 inside it.
    depth: usize,
    /// Whether the container at depth 1 and at depth 2 is an object.
    is_object: [bool; 3],
    /// The depth-2 container is the top-level `params` object.
    in_params: bool,
    /// The next string in the current object is a key.
    expecting_key: bool,
    top_key: Field,
    params_key: Field,
    in_string: bool,
    escaped: bool,
    /// Inside a bare value (number, `true`, …).
    in_scalar: bool,
    capture: Capture,
    kept: Vec<u8>,
    overflowed: bool,
    /// The top-level value has ended (or was not an object): nothing more to learn.
    done: bool,
    found: Envelope,
}

impl Default for EnvelopeScanner {
    fn default() -> Self {
        Self {
            depth: 0,
            is_object: [false; 3],
            in_params: false,
            expecting_key: false,
            top_key: Field::Other,
            params_key: Field::Other,
            in_string: false,
            escaped: false,
            in_scalar: false,
            capture: Capture::Skip,
            kept: Vec::new(),
            overflowed: false,
            done: false,
            found: Envelope::default(),
        }
    }
}

impl EnvelopeScanner {
    /// Reads the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        for &byte in chunk {
            if self.done {
                return;
            }
            self.step(byte);
        }
    }

    /// What was found so far.
    pub fn envelope(&self) -> &Envelope {
        &self.found
    }

    fn step(&mut self, byte: u8) {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.in_string = false;
                self.finish_text(true);
                return;
            }
            self.keep(byte);
            return;
        }
        let structural = matches!(byte, b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"')
            || byte.is_ascii_whitespace();
        if !structural {
            if !self.in_scalar {
                self.in_scalar = true;
                self.capture = self.value_capture();
            }
            self.keep(byte);
            return;
        }
        if self.in_scalar {
            self.in_scalar = false;
            self.finish_text(false);
        }
        match byte {
            b'"' => {
                self.in_string = true;
                self.capture = if self.expecting_key && self.depth == 1 {
                    Capture::TopKey
                } else if self.expecting_key && self.depth == 2 && self.in_params {
                    Capture::ParamsKey
                } else {
                    self.value_capture()
                };
            }
            b'{' | b'[' => {
                let object = byte == b'{';
                if self.depth == 0 && !object {
                    self.done = true; // a batch or a bare array: no envelope to find
                    return;
                }
                self.depth += 1;
                if self.depth <= 2 {
                    self.is_object[self.depth] = object;
                }
                if self.depth == 2 {
                    self.in_params = object && self.top_key == Field::Params;
                    self.params_key = Field::Other;
                }
                self.expecting_key = object;
            }
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                self.expecting_key = false;
                if self.depth == 0 {
                    self.done = true;
                }
            }
            b',' => self.expecting_key = self.depth <= 2 && self.is_object[self.depth],
            b':' => self.expecting_key = false,
            _ => {} // whitespace
        }
    }

    /// What a value starting here is, if it is worth keeping.
    fn value_capture(&self) -> Capture {
        match (self.depth, self.top_key, self.params_key) {
            (1, field @ (Field::Id | Field::Method), _) => Capture::Value(field),
            (2, _, Field::Name) if self.in_params => Capture::Value(Field::Name),
            _ => Capture::Skip,
        }
    }

    fn keep(&mut self, byte: u8) {
        if self.capture == Capture::Skip {
            return;
        }
        if self.kept.len() < MAX_FIELD_BYTES {
            self.kept.push(byte);
        } else {
            self.overflowed = true;
        }
    }

    /// Ends a string (`quoted`) or a bare value and files what it was.
    fn finish_text(&mut self, quoted: bool) {
        let capture = std::mem::replace(&mut self.capture, Capture::Skip);
        let kept = std::mem::take(&mut self.kept);
        let overflowed = std::mem::take(&mut self.overflowed);
        if capture == Capture::Skip {
            return;
        }
        let value = if overflowed {
            None
        } else if quoted {
            let mut text = Vec::with_capacity(kept.len() + 2);
            text.push(b'"');
            text.extend_from_slice(&kept);
            text.push(b'"');
            serde_json::from_slice::<String>(&text)
                .ok()
                .map(Value::String)
        } else {
            serde_json::from_slice::<Value>(&kept).ok()
        };
        let text = value.as_ref().and_then(Value::as_str);
        match capture {
            Capture::TopKey => self.top_key = field_named(text),
            Capture::ParamsKey => self.params_key = field_named(text),
            Capture::Value(Field::Id) => {
                self.found.id = value.filter(|id| id.is_number() || id.is_string());
            }
            Capture::Value(Field::Method) => self.found.method = text.map(str::to_owned),
            Capture::Value(Field::Name) => self.found.tool = text.map(str::to_owned),
            Capture::Value(_) | Capture::Skip => {}
        }
    }
}

fn field_named(name: Option<&str>) -> Field {
    match name {
        Some("id") => Field::Id,
        Some("method") => Field::Method,
        Some("params") => Field::Params,
        Some("name") => Field::Name,
        _ => Field::Other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn scan_in_chunks(text: &str, chunk: usize) -> Envelope {
        let mut scanner = EnvelopeScanner::default();
        for part in text.as_bytes().chunks(chunk) {
            scanner.feed(part);
        }
        scanner.envelope().clone()
    }

    /// Scans `text` split at every chunk size from 1 byte to whole, and checks each agrees.
    fn scan(text: &str) -> Envelope {
        let whole = scan_in_chunks(text, text.len().max(1));
        for chunk in 1..text.len().min(64) {
            assert_eq!(
                scan_in_chunks(text, chunk),
                whole,
                "chunks of {chunk}: {text}"
            );
        }
        whole
    }

    fn envelope(id: Value, method: &str, tool: Option<&str>) -> Envelope {
        Envelope {
            id: Some(id),
            method: Some(method.to_owned()),
            tool: tool.map(str::to_owned),
        }
    }

    #[test]
    fn finds_the_envelope_before_or_after_the_params() {
        let python = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"start_render","arguments":{"spec":{"kind":"chart"}}}}"#;
        assert_eq!(
            scan(python),
            envelope(json!(3), "tools/call", Some("start_render"))
        );
        let typescript = r#"{"method":"tools/call","params":{"arguments":{"spec":{"name":"not me","id":9}},"name":"render"},"jsonrpc":"2.0","id":"req-7"}"#;
        assert_eq!(
            scan(typescript),
            envelope(json!("req-7"), "tools/call", Some("render"))
        );
    }

    #[test]
    fn nested_look_alike_keys_and_escaped_quotes_are_not_mistaken_for_the_envelope() {
        let text = r#" { "params" : { "arguments" : { "id" : 1, "method": "x", "s": "a \"id\": 2, \\" , "list": [ {"name": "deep"} , "name" ] }, "name" : "echo" } , "id" : -12.5e0 , "method" : "tools\/call" } "#;
        assert_eq!(
            scan(text),
            envelope(json!(-12.5), "tools/call", Some("echo"))
        );
    }

    #[test]
    fn unusable_ids_are_absent() {
        for text in [
            r#"{"id":null,"method":"ping"}"#,
            r#"{"id":{"a":1},"method":"ping"}"#,
            r#"{"id":[1],"method":"ping"}"#,
            r#"{"method":"ping"}"#,
        ] {
            assert_eq!(scan(text).id, None, "{text}");
        }
    }

    #[test]
    fn batches_garbage_and_overlong_fields_give_nothing_and_never_panic() {
        let long_id = format!(r#"{{"id":"{}","method":"ping"}}"#, "x".repeat(1000));
        assert_eq!(scan(&long_id).id, None);
        assert_eq!(scan(&long_id).method.as_deref(), Some("ping"));
        assert_eq!(scan(r#"[{"id":1,"method":"ping"}]"#), Envelope::default());
        for text in [
            "",
            "}}}]]]",
            "\"\\",
            "not json",
            "{\"id\":1,\"method\":\"tools/call\"",
        ] {
            let _ = scan(text);
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let _ = scan_in_chunks(&format!(r#"{{"params":{deep},"id":5}}"#), 4096);
        assert_eq!(
            scan_in_chunks(&format!(r#"{{"params":{deep},"id":5}}"#), 4096).id,
            Some(json!(5))
        );
    }
}
