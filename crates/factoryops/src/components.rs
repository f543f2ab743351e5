use std::fmt;
use std::str::FromStr;

/// The parts of the platform one process can run (`serve --components …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Api,
    Ingest,
    Rules,
    Notify,
    Analytics,
    Reports,
}

impl Component {
    pub const ALL: [Component; 6] = [
        Component::Api,
        Component::Ingest,
        Component::Rules,
        Component::Notify,
        Component::Analytics,
        Component::Reports,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Api => "api",
            Component::Ingest => "ingest",
            Component::Rules => "rules",
            Component::Notify => "notify",
            Component::Analytics => "analytics",
            Component::Reports => "reports",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of components; parses `api,ingest` (default: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Components(Vec<Component>);

impl Components {
    pub fn all() -> Self {
        Self(Component::ALL.to_vec())
    }

    pub fn contains(&self, component: Component) -> bool {
        self.0.contains(&component)
    }

    pub fn iter(&self) -> impl Iterator<Item = Component> + '_ {
        self.0.iter().copied()
    }
}

impl Default for Components {
    fn default() -> Self {
        Self::all()
    }
}

impl FromStr for Components {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut chosen = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let component = Component::ALL.into_iter().find(|c| c.name() == part).ok_or_else(|| {
                format!("unknown component `{part}` (known: {})", Component::ALL.map(Component::name).join(", "))
            })?;
            if !chosen.contains(&component) {
                chosen.push(component);
            }
        }
        if chosen.is_empty() {
            return Err("name at least one component".into());
        }
        Ok(Self(chosen))
    }
}

impl fmt::Display for Components {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|c| c.name()).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        let c: Components = "api, ingest,api".parse().unwrap();
        assert!(c.contains(Component::Api) && c.contains(Component::Ingest));
        assert!(!c.contains(Component::Rules));
        assert_eq!(c.to_string(), "api,ingest");
        assert!("api,warp".parse::<Components>().unwrap_err().contains("warp"));
        assert!("".parse::<Components>().is_err());
        assert_eq!(Components::default(), Components::all());
    }
}
