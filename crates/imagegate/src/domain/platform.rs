//! Which kind of OS an image holds, as DescribeImportImageOs and guest
//! inspection report it. (Tencent's image `Platform` field is something
//! else: the distribution's name, or "Windows"; see [`OsPlatform::image_platform`].)

use super::names;

names! {
    pub enum OsPlatform ("OS platform") {
        Linux = "Linux",
        Windows = "Windows",
    }
}

impl OsPlatform {
    /// Tencent's `Platform` of an image: "Windows" for every Windows
    /// version, the distribution (`os_name`, e.g. "CentOS") otherwise.
    pub fn image_platform(self, os_name: &str) -> String {
        match self {
            OsPlatform::Windows => OsPlatform::Windows.as_str().to_owned(),
            OsPlatform::Linux => os_name.to_owned(),
        }
    }

    /// The platform a guest report names (guest inspection reports text;
    /// anything that is not Windows is a Linux family).
    pub fn of_report(platform: &str) -> OsPlatform {
        platform.parse().unwrap_or(OsPlatform::Linux)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_platform_is_the_distribution_or_windows() {
        assert_eq!(OsPlatform::Linux.image_platform("CentOS"), "CentOS");
        assert_eq!(
            OsPlatform::Windows.image_platform("Windows Server 2019"),
            "Windows"
        );
        assert_eq!(OsPlatform::of_report("Windows"), OsPlatform::Windows);
        assert_eq!(OsPlatform::of_report("Linux"), OsPlatform::Linux);
    }
}
