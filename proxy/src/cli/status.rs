//! `airlock status`: per workspace and tenant, Ready or Needs action, from
//! the same checks as `airlock check` (every secret reached, never
//! printed), with whether a proxy of this home is running; exit 1 when
//! anything needs action.

use std::collections::BTreeMap;
use std::process::ExitCode;

use super::load_policy;
use airlock::home::Home;

/// Prints the status; exit status 1 when anything needs action.
pub fn status(home: &Home, json: bool) -> anyhow::Result<ExitCode> {
    let policy = load_policy(home)?;
    let report = airlock::check::check(&home.dir, &policy);
    // Per tenant: what its routes need, each line naming its route.
    let mut tenants: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, t) in policy.tenants() {
        let needs = tenants.entry(t.name.clone()).or_default();
        if t.routes.is_empty() {
            needs.push(format!("no routes yet: airlock route add --tenant {} --service NAME", t.name));
        }
    }
    for r in &report.routes {
        let needs = tenants.entry(r.tenant.clone()).or_default();
        needs.extend(r.needs.iter().map(|n| format!("route {}: {n}", r.route)));
    }
    let general = &report.general;
    let proxy = super::runtime()?.block_on(super::probe::describe(home, policy.proxy.listen));
    let workspaces: Vec<(String, String, Vec<String>)> = airlock::workspace::registered(&home.dir)
        .into_iter()
        .map(|w| {
            let mut needs = Vec::new();
            match airlock::workspace::find(&w.dir) {
                Ok(Some(found)) if found.dir == w.dir && found.tenant == w.tenant => {}
                _ => needs.push(format!(
                    "its marker is gone or changed: airlock connect {} --tenant {}",
                    w.dir.display(),
                    w.tenant
                )),
            }
            match tenants.get(&w.tenant) {
                Some(t) if !t.is_empty() => needs.push(format!("tenant '{}' needs action (below)", w.tenant)),
                Some(_) => {}
                None => needs.push(format!("the config has no tenant '{}'", w.tenant)),
            }
            (w.dir.display().to_string(), w.tenant, needs)
        })
        .collect();
    let ok = general.is_empty() && tenants.values().all(Vec::is_empty) && workspaces.iter().all(|w| w.2.is_empty());
    if json {
        let out = serde_json::json!({
            "ok": ok,
            "proxy": proxy,
            "general": general,
            "tenants": tenants.iter().map(|(t, n)| serde_json::json!({"tenant": t, "ready": n.is_empty(), "needs": n})).collect::<Vec<_>>(),
            "workspaces": workspaces.iter().map(|(d, t, n)| serde_json::json!({"dir": d, "tenant": t, "ready": n.is_empty(), "needs": n})).collect::<Vec<_>>(),
        });
        println!("{out}");
    } else {
        println!("proxy: {proxy}");
        for g in general {
            println!("Needs action: {g}");
        }
        let word = |needs: &[String]| if needs.is_empty() { "Ready".to_owned() } else { "Needs action".to_owned() };
        if !workspaces.is_empty() {
            println!("\nWORKSPACE  (tenant)");
            for (dir, tenant, needs) in &workspaces {
                println!("{dir}  ({tenant})  {}", word(needs));
                for n in needs {
                    println!("    - {n}");
                }
            }
        }
        println!("\nTENANT");
        for (tenant, needs) in &tenants {
            println!("{tenant}  {}", word(needs));
            for n in needs {
                println!("    - {n}");
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
