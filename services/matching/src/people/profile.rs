//! A profile as its owner writes it, its validation, and the compact preferences that
//! recommendations test for every candidate.

use serde::{Deserialize, Serialize};

use super::date::{age, parse_ymd};
use super::error::PeopleError;

pub const MAX_NAME_CHARS: usize = 50;
/// A bio must be under this many characters.
pub const BIO_CHARS_UNDER: usize = 400;
pub const MAX_PHOTOS: usize = 9;
pub const MAX_URL_BYTES: usize = 2048;
pub const MIN_AGE: u32 = 18;
pub const MAX_AGE: u32 = 120;
pub const MAX_DISTANCE_KM: u32 = 160;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gender {
    Woman,
    Man,
    Nonbinary,
}

impl Gender {
    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Body of `PUT /v1/profiles/{profile_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileBody {
    pub display_name: String,
    /// `YYYY-MM-DD`; the owner must be at least 18.
    pub birth_date: String,
    pub gender: Gender,
    /// The genders they want to be shown (at least one).
    pub interested_in: Vec<Gender>,
    /// The ages they want to be shown, inclusive (18–120).
    pub age_min: u32,
    pub age_max: u32,
    /// How far away they want people to be, km (1–160).
    pub max_distance_km: u32,
    #[serde(default)]
    pub bio: String,
    /// Up to 9 `https://` URLs.
    #[serde(default)]
    pub photos: Vec<String>,
}

/// A stored profile. `premium` is not the owner's to set (service and admin tokens set it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub profile_id: String,
    pub display_name: String,
    pub birth_date: String,
    pub gender: Gender,
    pub interested_in: Vec<Gender>,
    pub age_min: u32,
    pub age_max: u32,
    pub max_distance_km: u32,
    pub bio: String,
    pub photos: Vec<String>,
    #[serde(default)]
    pub premium: bool,
    pub updated_at_ms: i64,
}

/// What recommendations test per candidate, packed small.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prefs {
    gender: u8,
    wants: u8,
    birth: u32,
    age_min: u32,
    age_max: u32,
    max_m: f64,
}

impl Prefs {
    pub fn max_m(&self) -> f64 {
        self.max_m
    }

    /// Whether both sides' preferences hold between `self` and `other` at `distance_m`:
    /// each is of a gender the other wants, of an age the other wants (on `today`,
    /// `yyyymmdd`), and within each one's maximum distance.
    pub fn mutual(&self, other: &Prefs, distance_m: f64, today: u32) -> bool {
        let (a, b) = (age(today, self.birth), age(today, other.birth));
        self.wants & other.gender != 0
            && other.wants & self.gender != 0
            && (self.age_min..=self.age_max).contains(&b)
            && (other.age_min..=other.age_max).contains(&a)
            && distance_m <= self.max_m
            && distance_m <= other.max_m
    }
}

fn invalid(code: &'static str, detail: impl Into<String>) -> PeopleError {
    PeopleError::Invalid {
        code,
        detail: detail.into(),
    }
}

/// A photo URL: `https://host/…`, no spaces or control characters, at most 2048 bytes.
fn is_https_url(u: &str) -> bool {
    let Some(rest) = u.strip_prefix("https://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    u.len() <= MAX_URL_BYTES
        && !host.is_empty()
        && !host.starts_with(':')
        && !u.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl ProfileBody {
    /// Checks every field (one code per field) on `today` (`yyyymmdd`).
    pub fn validate(self, id: &str, today: u32, now_ms: i64) -> Result<Profile, PeopleError> {
        let name = self.display_name.trim();
        let name_chars = name.chars().count();
        if name_chars == 0 || name_chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(invalid(
                "invalid_display_name",
                format!("display_name must be 1 to {MAX_NAME_CHARS} characters, without control characters"),
            ));
        }
        let birth = parse_ymd(&self.birth_date).ok_or_else(|| {
            invalid(
                "invalid_birth_date",
                format!("birth_date {:?} is not a YYYY-MM-DD date", self.birth_date),
            )
        })?;
        let years = age(today, birth);
        if birth > today || !(MIN_AGE..=MAX_AGE).contains(&years) {
            return Err(invalid(
                "invalid_birth_date",
                format!("the owner must be {MIN_AGE} to {MAX_AGE} years old (is {years})"),
            ));
        }
        let mut interested = self.interested_in.clone();
        interested.sort_by_key(|g| *g as u8);
        interested.dedup();
        if interested.is_empty() || interested.len() != self.interested_in.len() {
            return Err(invalid(
                "invalid_interested_in",
                "interested_in must name at least one gender, each once",
            ));
        }
        if self.age_min < MIN_AGE || self.age_max > MAX_AGE || self.age_min > self.age_max {
            return Err(invalid(
                "invalid_age_range",
                format!(
                    "need {MIN_AGE} ≤ age_min ≤ age_max ≤ {MAX_AGE}, got {}..{}",
                    self.age_min, self.age_max
                ),
            ));
        }
        if !(1..=MAX_DISTANCE_KM).contains(&self.max_distance_km) {
            return Err(invalid(
                "invalid_max_distance",
                format!(
                    "max_distance_km must be in 1..={MAX_DISTANCE_KM}, got {}",
                    self.max_distance_km
                ),
            ));
        }
        if self.bio.chars().count() >= BIO_CHARS_UNDER {
            return Err(invalid(
                "invalid_bio",
                format!("bio must be under {BIO_CHARS_UNDER} characters"),
            ));
        }
        if self.photos.len() > MAX_PHOTOS {
            return Err(invalid(
                "invalid_photos",
                format!("at most {MAX_PHOTOS} photos, got {}", self.photos.len()),
            ));
        }
        if let Some(bad) = self.photos.iter().find(|u| !is_https_url(u)) {
            let shown: String = bad.chars().take(80).collect();
            return Err(invalid(
                "invalid_photos",
                format!("photo {shown:?} is not an https:// URL of at most {MAX_URL_BYTES} bytes"),
            ));
        }
        Ok(Profile {
            profile_id: id.to_owned(),
            display_name: name.to_owned(),
            birth_date: self.birth_date,
            gender: self.gender,
            interested_in: self.interested_in,
            age_min: self.age_min,
            age_max: self.age_max,
            max_distance_km: self.max_distance_km,
            bio: self.bio,
            photos: self.photos,
            premium: false,
            updated_at_ms: now_ms,
        })
    }
}

impl Profile {
    pub(super) fn prefs(&self) -> Prefs {
        Prefs {
            gender: self.gender.bit(),
            wants: self.interested_in.iter().fold(0, |m, g| m | g.bit()),
            birth: parse_ymd(&self.birth_date).unwrap_or(u32::MAX),
            age_min: self.age_min,
            age_max: self.age_max,
            max_m: f64::from(self.max_distance_km) * 1000.0,
        }
    }

    pub(super) fn age(&self, today: u32) -> u32 {
        parse_ymd(&self.birth_date).map_or(0, |b| age(today, b))
    }

    /// The owner's own view: everything.
    pub(super) fn own_view(&self, today: u32) -> OwnView {
        OwnView {
            age: self.age(today),
            profile: self.clone(),
        }
    }

    /// What others see: no birth date, no preferences, never a position.
    pub(super) fn card(&self, today: u32) -> Card {
        Card {
            profile_id: self.profile_id.clone(),
            display_name: self.display_name.clone(),
            age: self.age(today),
            gender: self.gender,
            bio: self.bio.clone(),
            photos: self.photos.clone(),
        }
    }
}

/// `GET /v1/profiles/{profile_id}` for its owner.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OwnView {
    #[serde(flatten)]
    pub profile: Profile,
    pub age: u32,
}

/// A profile as other people see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Card {
    pub profile_id: String,
    pub display_name: String,
    pub age: u32,
    pub gender: Gender,
    pub bio: String,
    pub photos: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: u32 = 20_261_121;

    fn body() -> ProfileBody {
        ProfileBody {
            display_name: "Ana".into(),
            birth_date: "1998-05-17".into(),
            gender: Gender::Woman,
            interested_in: vec![Gender::Man],
            age_min: 25,
            age_max: 35,
            max_distance_km: 10,
            bio: String::new(),
            photos: vec!["https://img.example/a.jpg".into()],
        }
    }

    #[test]
    fn each_bad_field_has_its_own_code() {
        let code = |b: ProfileBody| match b.validate("p1", TODAY, 0) {
            Err(PeopleError::Invalid { code, .. }) => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(ProfileBody {
                display_name: "  ".into(),
                ..body()
            }),
            "invalid_display_name"
        );
        assert_eq!(
            code(ProfileBody {
                display_name: "x".repeat(51),
                ..body()
            }),
            "invalid_display_name"
        );
        assert_eq!(
            code(ProfileBody {
                birth_date: "1998-02-30".into(),
                ..body()
            }),
            "invalid_birth_date"
        );
        assert_eq!(
            code(ProfileBody {
                birth_date: "2008-11-22".into(),
                ..body()
            }),
            "invalid_birth_date"
        );
        assert_eq!(
            code(ProfileBody {
                interested_in: vec![],
                ..body()
            }),
            "invalid_interested_in"
        );
        assert_eq!(
            code(ProfileBody {
                interested_in: vec![Gender::Man, Gender::Man],
                ..body()
            }),
            "invalid_interested_in"
        );
        assert_eq!(
            code(ProfileBody {
                age_min: 17,
                ..body()
            }),
            "invalid_age_range"
        );
        assert_eq!(
            code(ProfileBody {
                age_min: 40,
                age_max: 30,
                ..body()
            }),
            "invalid_age_range"
        );
        assert_eq!(
            code(ProfileBody {
                max_distance_km: 0,
                ..body()
            }),
            "invalid_max_distance"
        );
        assert_eq!(
            code(ProfileBody {
                max_distance_km: 161,
                ..body()
            }),
            "invalid_max_distance"
        );
        assert_eq!(
            code(ProfileBody {
                bio: "é".repeat(400),
                ..body()
            }),
            "invalid_bio"
        );
        assert_eq!(
            code(ProfileBody {
                photos: vec!["https://a.example/x".into(); 10],
                ..body()
            }),
            "invalid_photos"
        );
        for bad in [
            "http://a.example/x",
            "https://",
            "https://a b",
            "ftp://a",
            "https:///x",
        ] {
            assert_eq!(
                code(ProfileBody {
                    photos: vec![bad.into()],
                    ..body()
                }),
                "invalid_photos",
                "{bad}"
            );
        }
    }

    #[test]
    fn boundaries_are_accepted() {
        let p = ProfileBody {
            display_name: "x".repeat(50),
            birth_date: "2008-11-21".into(),
            bio: "é".repeat(399),
            photos: vec!["https://a.example/x".into(); 9],
            age_min: 18,
            age_max: 120,
            max_distance_km: 160,
            ..body()
        }
        .validate("p1", TODAY, 0)
        .unwrap();
        assert_eq!(p.age(TODAY), 18);
    }

    #[test]
    fn preferences_must_hold_both_ways() {
        let ana = body().validate("ana", TODAY, 0).unwrap();
        let bo = ProfileBody {
            display_name: "Bo".into(),
            birth_date: "1995-01-01".into(),
            gender: Gender::Man,
            interested_in: vec![Gender::Woman],
            age_min: 18,
            age_max: 40,
            max_distance_km: 5,
            ..body()
        }
        .validate("bo", TODAY, 0)
        .unwrap();
        let (a, b) = (ana.prefs(), bo.prefs());
        assert!(a.mutual(&b, 4_000.0, TODAY) && b.mutual(&a, 4_000.0, TODAY));
        // Bo's 5 km limit binds although Ana accepts 10 km.
        assert!(!a.mutual(&b, 6_000.0, TODAY));
        // Ana wants 25–35: a 24-year-old man is out, though he would accept her.
        let young = Profile {
            birth_date: "2002-06-01".into(),
            ..bo.clone()
        };
        assert!(!a.mutual(&young.prefs(), 1_000.0, TODAY));
        // Bo wants women: a man interested in men is out both ways.
        let other = Profile {
            interested_in: vec![Gender::Man],
            ..bo.clone()
        };
        assert!(!a.mutual(&other.prefs(), 1_000.0, TODAY));
        // Ana too old for Bo's range.
        let picky = Profile { age_max: 27, ..bo };
        assert!(!a.mutual(&picky.prefs(), 1_000.0, TODAY));
    }
}
