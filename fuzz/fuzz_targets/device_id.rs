//! Any device id an app registers: recognised as one of the push services' forms, or refused. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushrelay::push::device::{Device, shorten};

fuzz_target!(|device_id: &str| {
    let bundle_ids = ["com.example.app".to_owned()];
    if let Ok(device) = Device::parse(device_id, &bundle_ids, false) {
        let _ = device.platform();
    }
    let _ = shorten(device_id);
});
