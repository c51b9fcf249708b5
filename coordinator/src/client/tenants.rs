//! Tenant commands: provision, deprovision, list, show, change plan and
//! rotate API keys.

use std::fmt::Write as _;

use knowton_common::units::format_bytes;
use knowton_common::{Feature, FeatureOverrides};
use reqwest::Method;
use serde_json::Value;

use super::{Api, path_segment, print_json};
use crate::api::views::{
    DeprovisionResponse, ProvisionResponse, RotatedKey, TenantPage, TenantView,
};
use crate::cli::{DeprovisionArgs, GetArgs, ListArgs, ProvisionArgs, RotateKeyArgs, SetPlanArgs};
use crate::provision::{BrandingPatch, ProvisionRequest, UpdateRequest};

pub async fn provision(args: ProvisionArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let mut features = FeatureOverrides::default();
    for feature in &args.disable {
        features.set(*feature, false);
    }
    let branding = BrandingPatch {
        company_name: args.company_name,
        primary_color: args.primary_color,
        secondary_color: args.secondary_color,
        logo_url: args.logo_url,
    };
    let request = ProvisionRequest {
        name: args.name,
        slug: args.slug,
        plan: args.plan,
        admin_email: args.admin_email,
        domain: args.domain,
        features: (!args.disable.is_empty()).then_some(features),
        branding: Some(branding),
    };
    let done: ProvisionResponse = api
        .call(Method::POST, "/api/v1/tenants", Some(&request))
        .await?;
    if api.json() {
        print_json(&done);
        return Ok(());
    }
    let mut out = describe(&done.tenant);
    let _ = writeln!(
        out,
        "\nAdmin user\n  email:               {}\n  temporary password:  {}  (must be changed at first login)\n\
         \nAPI keys (shown only now: store them in your secret manager)\n  production:   {}\n  development:  {}",
        done.admin.email,
        done.admin.temporary_password,
        done.api_keys.production,
        done.api_keys.development
    );
    println!("Provisioned tenant {}\n\n{out}", done.tenant.slug);
    Ok(())
}

pub async fn deprovision(args: DeprovisionArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let path = format!(
        "/api/v1/tenants/{}{}",
        path_segment(&args.tenant)?,
        if args.purge { "?purge=true" } else { "" }
    );
    let done: DeprovisionResponse = api.call(Method::DELETE, &path, None::<&()>).await?;
    if api.json() {
        print_json(&done);
    } else if let Some(tenant) = &done.tenant {
        println!(
            "Deprovisioned tenant {} ({}): API keys revoked, data kept until {}",
            tenant.slug,
            tenant.id,
            tenant
                .retain_until
                .map_or_else(|| "further notice".into(), |t| t.to_rfc3339())
        );
    } else {
        println!("Purged tenant {}: all of its data was deleted", done.id);
    }
    Ok(())
}

pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let mut tenants = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/v1/tenants?limit=200".to_owned();
        if let Some(status) = &args.status {
            let _ = write!(path, "&status={}", path_segment(status)?);
        }
        if let Some(c) = &cursor {
            let _ = write!(path, "&cursor={c}");
        }
        let page: TenantPage = api.call(Method::GET, &path, None::<&()>).await?;
        tenants.extend(page.tenants);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    if api.json() {
        print_json(&tenants);
        return Ok(());
    }
    println!(
        "{:<24} {:<13} {:<14} {:<36} DOMAIN",
        "SLUG", "PLAN", "STATUS", "ID"
    );
    for t in &tenants {
        println!(
            "{:<24} {:<13} {:<14} {:<36} {}",
            t.slug, t.plan, t.status, t.id, t.domain
        );
    }
    Ok(())
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let path = format!("/api/v1/tenants/{}", path_segment(&args.tenant)?);
    let tenant: TenantView = api.call(Method::GET, &path, None::<&()>).await?;
    if api.json() {
        print_json(&tenant);
    } else {
        print!("{}", describe(&tenant));
    }
    Ok(())
}

pub async fn set_plan(args: SetPlanArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let path = format!(
        "/api/v1/tenants/{}{}",
        path_segment(&args.tenant)?,
        if args.force { "?force=true" } else { "" }
    );
    let request = UpdateRequest {
        plan: Some(args.plan),
        ..Default::default()
    };
    let tenant: TenantView = api.call(Method::PUT, &path, Some(&request)).await?;
    if api.json() {
        print_json(&tenant);
    } else {
        println!(
            "Tenant {} is now on the {} plan (configuration version {})",
            tenant.slug, tenant.plan, tenant.config_version
        );
    }
    Ok(())
}

pub async fn rotate_key(args: RotateKeyArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let path = format!(
        "/api/v1/tenants/{}/api-keys/{}/rotate",
        path_segment(&args.tenant)?,
        args.kind.as_str()
    );
    let key: RotatedKey = api.call(Method::POST, &path, None::<&()>).await?;
    if api.json() {
        print_json(&key);
    } else {
        println!(
            "New {} key (shown only now; the old key no longer works):\n  {}",
            key.kind.as_str(),
            key.api_key
        );
    }
    Ok(())
}

fn describe(t: &TenantView) -> String {
    let features: Vec<&str> = Feature::ALL
        .into_iter()
        .filter(|f| {
            let flags = serde_json::to_value(t.features).unwrap_or_default();
            flags
                .get(f.flag())
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
        .map(Feature::short_name)
        .collect();
    let keys: Vec<String> = t
        .api_keys
        .iter()
        .map(|k| format!("{} {}…", k.kind.as_str(), k.display_prefix))
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "{} ({})", t.name, t.slug);
    let _ = writeln!(out, "  id:          {}", t.id);
    let _ = writeln!(out, "  plan:        {}", t.plan);
    let _ = writeln!(out, "  status:      {}", t.status);
    if let Some(until) = t.retain_until {
        let _ = writeln!(out, "  data kept:   until {}", until.to_rfc3339());
    }
    let _ = writeln!(out, "  domain:      https://{}", t.domain);
    let _ = writeln!(out, "  admin:       {}", t.admin_email);
    let _ = writeln!(
        out,
        "  features:    {}",
        if features.is_empty() {
            "none".into()
        } else {
            features.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "  branding:    {} {} / {}",
        t.branding.company_name, t.branding.primary_color, t.branding.secondary_color
    );
    let _ = writeln!(
        out,
        "  usage:       {} / {} users, {} / {} storage",
        t.usage.users,
        t.limits.max_users,
        format_bytes(t.usage.storage_bytes),
        format_bytes(t.limits.storage_bytes)
    );
    let _ = writeln!(
        out,
        "  api keys:    {}",
        if keys.is_empty() {
            "none (revoked)".into()
        } else {
            keys.join(", ")
        }
    );
    let _ = writeln!(out, "  created:     {}", t.created_at.to_rfc3339());
    let _ = writeln!(out, "  config:      version {}", t.config_version);
    out
}
