//! The licence files: LICENSE and NOTICE exist, THIRD-PARTY-LICENSES.md matches what
//! `scripts/third-party-licenses.py` generates from Cargo.lock, and the image carries
//! all three.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn third_party_licences_are_up_to_date() {
    let out = Command::new("python3")
        .arg(root().join("scripts/third-party-licenses.py"))
        .arg("--check")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(root().join("THIRD-PARTY-LICENSES.md")).expect("read");
    // Spot checks: the libvirt bindings' LGPL, and a permissive licence text.
    assert!(text.contains("| virt |"), "virt is listed");
    assert!(
        text.contains("GNU LESSER GENERAL PUBLIC LICENSE"),
        "LGPL text"
    );
    assert!(
        text.contains("Permission is hereby granted, free of charge"),
        "MIT text"
    );
}

#[test]
fn the_image_carries_the_licences_and_no_placeholder_source() {
    for f in ["LICENSE", "NOTICE", "THIRD-PARTY-LICENSES.md"] {
        assert!(root().join(f).is_file(), "{f} is missing");
    }
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile.contains("COPY LICENSE NOTICE THIRD-PARTY-LICENSES.md /usr/share/doc/vadvisor/"),
        "the run stage copies the licence files"
    );
    assert!(
        !dockerfile.contains("example.invalid"),
        "placeholder source label"
    );
    let dockerignore = std::fs::read_to_string(root().join(".dockerignore")).expect("read");
    for f in ["LICENSE", "NOTICE", "THIRD-PARTY-LICENSES.md"] {
        assert!(
            !dockerignore.lines().any(|l| l.trim() == f),
            "{f} must be in the build context"
        );
    }
}
