use super::*;

#[test]
fn slugs() {
    for good in ["acme", "acme-corp", "a1b", "x".repeat(40).as_str()] {
        assert!(validate_slug(good).is_ok(), "{good}");
    }
    for bad in [
        "ab",
        &"x".repeat(41),
        "Acme",
        "-acme",
        "acme-",
        "ac_me",
        "acmé",
        "acme'; DROP TABLE tenants;--",
        "admin",
        "www",
        "kube-system",
        "",
    ] {
        let err = validate_slug(bad).unwrap_err();
        assert_eq!(err.field, "slug", "{bad}");
    }
}

#[test]
fn slugs_shaped_like_a_tenant_id_are_refused() {
    // A slug equal to another tenant's id once let that slug's key reach
    // the other tenant: paths take an id or a slug.
    for bad in [
        "0192f0c4-8b6e-7c3a-9d1e-2f3a4b5c6d7e",
        "0192f0c48b6e7c3a9d1e2f3a4b5c6d7e",
        "0192f0c4-8b6e7c3a9d1e-2f3a4b5c6d7e",
        "00000000-0000-0000-0000-000000000000",
    ] {
        let err = validate_slug(bad).unwrap_err();
        assert_eq!(err.field, "slug", "{bad}");
        assert!(err.message.contains("tenant id"), "{err}");
    }
    // Hex words that are not 32 digits long are ordinary slugs.
    for good in [
        "deadbeef",
        "cafe-babe-0123",
        &"a".repeat(31),
        &"a".repeat(33),
    ] {
        assert!(validate_slug(good).is_ok(), "{good}");
    }
}

#[test]
fn domains() {
    assert_eq!(
        normalize_domain("domain", "Acme.KnowTon.com").unwrap(),
        "acme.knowton.com"
    );
    for bad in [
        "localhost",
        "acme..com",
        "-acme.com",
        "acme.com.",
        "10.0.0.1",
        "acme corp.com",
        "ac_me.com",
        "http://acme.com",
        &format!("{}.com", "a".repeat(64)),
    ] {
        assert!(normalize_domain("domain", bad).is_err(), "{bad}");
    }
}

#[test]
fn emails() {
    assert_eq!(
        normalize_email("adminEmail", "First.Last+tag@Acme.COM").unwrap(),
        "First.Last+tag@acme.com"
    );
    for bad in [
        "admin",
        "@acme.com",
        "admin@",
        "a..b@acme.com",
        "a b@acme.com",
        "admin@acme",
    ] {
        let err = normalize_email("adminEmail", bad).unwrap_err();
        assert_eq!(err.field, "adminEmail");
    }
}

#[test]
fn colours() {
    assert!(validate_color("c", "#1e40AF").is_ok());
    for bad in ["1E40AF", "#1E40A", "#1E40AFF", "#GGGGGG", "red", "#fff"] {
        assert!(validate_color("c", bad).is_err(), "{bad}");
    }
}

#[test]
fn names_are_kept_verbatim_but_not_blank() {
    assert!(validate_name("name", "Ångström & Söhne GmbH 株式会社").is_ok());
    assert!(validate_name("name", "Robert'); DROP TABLE tenants;--").is_ok());
    assert!(validate_name("name", "   ").is_err());
    assert!(validate_name("name", "a\nb").is_err());
    assert!(validate_name("name", &"x".repeat(201)).is_err());
}

#[test]
fn logo_urls_are_limited_to_url_characters() {
    // Hardening review, finding 12: quotes and brackets went through to
    // HTML e-mails, the frontend's CSS and the ConfigMap.
    for bad in [
        "https://cdn.acme.com/logo.png\"onerror=\"alert(1)",
        "https://cdn.acme.com/logo.png'><script>",
        "https://cdn.acme.com/a(b).png",
        "https://cdn.acme.com/a\\b.png",
        "https://cdn.acme.com/l\u{f6}go.png",
        "https://cdn.acme.com/a`b",
        "https://cdn.acme.com/a%zz",
        "https://cdn.acme.com/a%2",
    ] {
        let err = validate_https_url("branding.logoUrl", bad).unwrap_err();
        assert_eq!(err.field, "branding.logoUrl", "{bad}");
    }
    assert!(validate_https_url("u", "https://cdn.acme.com/a%20b.png?x=1&y=2#top").is_ok());
}

#[test]
fn logo_urls() {
    assert!(validate_https_url("u", "https://cdn.acme.com/logo.png").is_ok());
    assert!(validate_https_url("u", "https://cdn.acme.com:8443/l.svg?v=1").is_ok());
    for bad in [
        "http://cdn.acme.com/x.png",
        "javascript:alert(1)",
        "https://",
        "https://a b.com/",
    ] {
        assert!(validate_https_url("u", bad).is_err(), "{bad}");
    }
}

#[test]
fn branding_names_the_bad_field() {
    let mut branding = Branding::default_for("Acme");
    branding.secondary_color = "blue".into();
    assert_eq!(
        branding.validate().unwrap_err().field,
        "branding.secondaryColor"
    );
}
