//! `msg::Control::from_payload` with and without a token key. What decodes re-encodes to a
//! payload that decodes to the same message; with a key, a decoded message re-signed with that
//! key decodes again and fails with another key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probe_proto::auth;
use probe_proto::msg::{Control, CONTROL_TAG};

fuzz_target!(|data: &[u8]| {
    let key = auth::token_key("fuzz-token");
    let other = auth::token_key("other-token");
    // Raw, and with the control tag prepended so the postcard decoder sees every input.
    let mut tagged = Vec::with_capacity(data.len() + 1);
    tagged.push(CONTROL_TAG);
    tagged.extend_from_slice(data);
    for payload in [data, &tagged[..]] {
        if let Ok(msg) = Control::from_payload(payload, None) {
            let again = msg.to_payload(None);
            assert_eq!(Control::from_payload(&again, None).as_ref(), Ok(&msg));
            let signed = msg.to_payload(Some(&key));
            assert_eq!(
                Control::from_payload(&signed, Some(&key)).as_ref(),
                Ok(&msg)
            );
            assert!(Control::from_payload(&signed, Some(&other)).is_err());
        }
        let _ = Control::from_payload(payload, Some(&key));
    }
});
