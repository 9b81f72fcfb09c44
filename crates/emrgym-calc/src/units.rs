//! Quantities and units: what each kind of calculator input measures, the units it
//! accepts, one-step conversion to its canonical unit with exact constants (no
//! intermediate rounding), plausibility bounds, and the analyte table behind the
//! `convert_units` tool.

use super::CalcError;

/// A unit one quantity accepts: `canonical = (value + offset) * factor / divisor`.
///
/// The offset comes first and the divisor last so that °F converts as (f - 32) x 5 / 9 with
/// one rounding: 100.4 °F is exactly 38.0 °C (with a precomputed 5/9 it was
/// 38.00000000000001, which scored "> 38 °C" in Centor and SIRS).
#[derive(Debug, Clone, Copy)]
pub struct UnitDef {
    /// Accepted spellings; the first is the display name.
    pub names: &'static [&'static str],
    /// Multiplier to the canonical unit.
    pub factor: f64,
    /// Offset added before the multiplier (temperature only).
    pub offset: f64,
    /// Divisor applied last (1 except where the exact factor is a fraction, °F).
    pub divisor: f64,
}

const fn u(names: &'static [&'static str], factor: f64) -> UnitDef {
    UnitDef {
        names,
        factor,
        offset: 0.0,
        divisor: 1.0,
    }
}

impl UnitDef {
    /// A value in this unit, in the canonical unit.
    pub fn to_canonical(&self, value: f64) -> f64 {
        (value + self.offset) * self.factor / self.divisor
    }

    /// A canonical value, in this unit.
    pub fn from_canonical(&self, value: f64) -> f64 {
        value * self.divisor / self.factor - self.offset
    }
}

/// Lower bound meaning "zero is allowed" (bounds are exclusive below).
const ZERO_OK: f64 = -f64::MIN_POSITIVE;

// Molar masses (g/mol) and the exact factors derived from them.
/// Creatinine: 1 mg/dL = 88.4 µmol/L (the conventional IFCC/KDIGO factor; 10,000/113.12 = 88.40).
pub const CREATININE_UMOL_PER_MGDL: f64 = 88.4;
/// Glucose C6H12O6, 180.156 g/mol: 1 mmol/L = 18.0156 mg/dL.
pub const GLUCOSE_MGDL_PER_MMOL: f64 = 18.0156;
/// Urea nitrogen (2 N = 28.0134 g/mol): 1 mmol/L urea = 2.80134 mg/dL BUN.
pub const BUN_MGDL_PER_MMOL: f64 = 2.80134;
/// Calcium 40.078 g/mol: 1 mmol/L = 4.0078 mg/dL; 1 mEq/L = 0.5 mmol/L.
pub const CALCIUM_MGDL_PER_MMOL: f64 = 4.0078;
/// Bilirubin 584.66 g/mol: 1 mg/dL = 17.1040 µmol/L.
pub const BILIRUBIN_UMOL_PER_MGDL: f64 = 10_000.0 / 584.66;
/// Cholesterol 386.65 g/mol: 1 mmol/L = 38.665 mg/dL.
pub const CHOLESTEROL_MGDL_PER_MMOL: f64 = 38.665;
/// Triglycerides as triolein, 885.7 g/mol: 1 mmol/L = 88.57 mg/dL.
pub const TG_MGDL_PER_MMOL: f64 = 88.57;
/// Haemoglobin monomer 16,114.5 g/mol: 1 mmol/L = 1.61145 g/dL.
pub const HB_GDL_PER_MMOL: f64 = 1.611_45;
/// Insulin: 1 µIU/mL = 6.00 pmol/L (Heinemann 2010 harmonised factor).
pub const INSULIN_PMOL_PER_UIU: f64 = 6.0;

/// What a numeric input measures. Each kind has one canonical unit that formulas use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Q {
    /// Age, years.
    Age,
    /// Body weight, kg.
    Weight,
    /// Height, cm.
    Height,
    /// Body temperature, °C.
    Temperature,
    /// Blood pressure or blood gas partial pressure, mm Hg.
    Pressure,
    /// Heart rate, beats/min.
    HeartRate,
    /// Respiratory rate, breaths/min.
    RespRate,
    /// ECG interval, ms.
    Interval,
    /// A percentage (FiO2, SaO2, haematocrit), %.
    Percent,
    /// Body mass index, kg/m².
    Bmi,
    /// Urine output, mL/day.
    UrineOutput,
    /// Vasopressor dose, µg/kg/min.
    DoseRate,
    /// Drug dose, mg.
    Dose,
    /// A laboratory concentration or count.
    Lab(Analyte),
}

/// Laboratory analytes with their conventional (canonical) unit and SI alternatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analyte {
    /// Serum creatinine, mg/dL.
    Creatinine,
    /// Urine creatinine, mg/dL.
    UrineCreatinine,
    /// Glucose, mg/dL.
    Glucose,
    /// Blood urea nitrogen, mg/dL (urea mmol/L accepted).
    Bun,
    /// Total calcium, mg/dL.
    Calcium,
    /// Albumin, g/dL.
    Albumin,
    /// Total bilirubin, mg/dL.
    Bilirubin,
    /// Total or HDL cholesterol, mg/dL.
    Cholesterol,
    /// Triglycerides, mg/dL.
    Triglycerides,
    /// Haemoglobin, g/dL.
    Hemoglobin,
    /// Fasting insulin, µIU/mL.
    Insulin,
    /// Serum sodium, mEq/L.
    Sodium,
    /// Serum potassium, mEq/L.
    Potassium,
    /// Serum chloride, mEq/L.
    Chloride,
    /// Serum bicarbonate, mEq/L.
    Bicarbonate,
    /// Urine sodium, mEq/L.
    UrineSodium,
    /// Enzyme activity (AST, ALT), U/L.
    Enzyme,
    /// Platelet count, 10⁹/L.
    Platelets,
    /// White cell count, 10⁹/L.
    Wbc,
}

const MEQ: &[UnitDef] = &[u(&["mEq/L", "meq/L"], 1.0), u(&["mmol/L"], 1.0)];
const COUNT: &[UnitDef] = &[
    u(&["10^9/L", "x10^9/L", "10⁹/L", "10*9/L"], 1.0),
    u(&["10^3/µL", "10^3/uL", "x10^3/uL", "K/uL", "10³/µL", "10*3/uL"], 1.0),
    u(&["/µL", "/uL", "cells/µL", "cells/uL", "/mm3", "/mm^3"], 1e-3),
    u(&["/L"], 1e-9),
];

impl Analyte {
    /// Every analyte, in the order `convert_units` lists them.
    pub const ALL: [Analyte; 19] = [
        Analyte::Creatinine,
        Analyte::UrineCreatinine,
        Analyte::Glucose,
        Analyte::Bun,
        Analyte::Calcium,
        Analyte::Albumin,
        Analyte::Bilirubin,
        Analyte::Cholesterol,
        Analyte::Triglycerides,
        Analyte::Hemoglobin,
        Analyte::Insulin,
        Analyte::Sodium,
        Analyte::Potassium,
        Analyte::Chloride,
        Analyte::Bicarbonate,
        Analyte::UrineSodium,
        Analyte::Enzyme,
        Analyte::Platelets,
        Analyte::Wbc,
    ];

    /// Identifier used in tool arguments.
    pub fn id(self) -> &'static str {
        match self {
            Analyte::Creatinine => "creatinine",
            Analyte::UrineCreatinine => "urine_creatinine",
            Analyte::Glucose => "glucose",
            Analyte::Bun => "bun",
            Analyte::Calcium => "calcium",
            Analyte::Albumin => "albumin",
            Analyte::Bilirubin => "bilirubin",
            Analyte::Cholesterol => "cholesterol",
            Analyte::Triglycerides => "triglycerides",
            Analyte::Hemoglobin => "hemoglobin",
            Analyte::Insulin => "insulin",
            Analyte::Sodium => "sodium",
            Analyte::Potassium => "potassium",
            Analyte::Chloride => "chloride",
            Analyte::Bicarbonate => "bicarbonate",
            Analyte::UrineSodium => "urine_sodium",
            Analyte::Enzyme => "enzyme",
            Analyte::Platelets => "platelets",
            Analyte::Wbc => "wbc",
        }
    }

    /// Look an analyte up by its identifier.
    pub fn from_id(id: &str) -> Option<Analyte> {
        Analyte::ALL.into_iter().find(|a| a.id() == id)
    }

    /// Where the conversion constant comes from.
    pub fn basis(self) -> &'static str {
        match self {
            Analyte::Creatinine | Analyte::UrineCreatinine => "1 mg/dL = 88.4 µmol/L (113.12 g/mol)",
            Analyte::Glucose => "1 mmol/L = 18.0156 mg/dL (180.156 g/mol)",
            Analyte::Bun => "1 mmol/L urea = 2.80134 mg/dL urea nitrogen (2 N, 28.0134 g/mol)",
            Analyte::Calcium => "1 mmol/L = 4.0078 mg/dL (40.078 g/mol); 1 mEq/L = 0.5 mmol/L",
            Analyte::Albumin => "1 g/dL = 10 g/L",
            Analyte::Bilirubin => "1 mg/dL = 17.104 µmol/L (584.66 g/mol)",
            Analyte::Cholesterol => "1 mmol/L = 38.665 mg/dL (386.65 g/mol)",
            Analyte::Triglycerides => "1 mmol/L = 88.57 mg/dL (triolein, 885.7 g/mol)",
            Analyte::Hemoglobin => "1 g/dL = 10 g/L; 1 mmol/L (monomer) = 1.61145 g/dL",
            Analyte::Insulin => "1 µIU/mL = 6.00 pmol/L",
            Analyte::Sodium | Analyte::Potassium | Analyte::Chloride | Analyte::Bicarbonate | Analyte::UrineSodium => {
                "monovalent: 1 mEq/L = 1 mmol/L"
            }
            Analyte::Enzyme => "1 µkat/L = 60 U/L",
            Analyte::Platelets | Analyte::Wbc => "10⁹/L = 10³/µL = 1,000/µL",
        }
    }

    fn units(self) -> &'static [UnitDef] {
        match self {
            Analyte::Creatinine | Analyte::UrineCreatinine => {
                const T: &[UnitDef] = &[
                    u(&["mg/dL", "mg/dl"], 1.0),
                    u(&["µmol/L", "umol/L", "μmol/L"], 1.0 / CREATININE_UMOL_PER_MGDL),
                    u(&["mmol/L"], 1000.0 / CREATININE_UMOL_PER_MGDL),
                ];
                T
            }
            Analyte::Glucose => {
                const T: &[UnitDef] = &[u(&["mg/dL", "mg/dl"], 1.0), u(&["mmol/L"], GLUCOSE_MGDL_PER_MMOL)];
                T
            }
            Analyte::Bun => {
                const T: &[UnitDef] = &[u(&["mg/dL", "mg/dl"], 1.0), u(&["mmol/L"], BUN_MGDL_PER_MMOL)];
                T
            }
            Analyte::Calcium => {
                const T: &[UnitDef] = &[
                    u(&["mg/dL", "mg/dl"], 1.0),
                    u(&["mmol/L"], CALCIUM_MGDL_PER_MMOL),
                    u(&["mEq/L", "meq/L"], CALCIUM_MGDL_PER_MMOL / 2.0),
                ];
                T
            }
            Analyte::Albumin => {
                const T: &[UnitDef] = &[u(&["g/dL", "g/dl"], 1.0), u(&["g/L"], 0.1)];
                T
            }
            Analyte::Bilirubin => {
                const T: &[UnitDef] = &[
                    u(&["mg/dL", "mg/dl"], 1.0),
                    u(&["µmol/L", "umol/L", "μmol/L"], 1.0 / BILIRUBIN_UMOL_PER_MGDL),
                ];
                T
            }
            Analyte::Cholesterol => {
                const T: &[UnitDef] = &[u(&["mg/dL", "mg/dl"], 1.0), u(&["mmol/L"], CHOLESTEROL_MGDL_PER_MMOL)];
                T
            }
            Analyte::Triglycerides => {
                const T: &[UnitDef] = &[u(&["mg/dL", "mg/dl"], 1.0), u(&["mmol/L"], TG_MGDL_PER_MMOL)];
                T
            }
            Analyte::Hemoglobin => {
                const T: &[UnitDef] = &[u(&["g/dL", "g/dl"], 1.0), u(&["g/L"], 0.1), u(&["mmol/L"], HB_GDL_PER_MMOL)];
                T
            }
            Analyte::Insulin => {
                const T: &[UnitDef] = &[
                    u(&["µIU/mL", "uIU/mL", "mIU/L", "μIU/mL"], 1.0),
                    u(&["pmol/L"], 1.0 / INSULIN_PMOL_PER_UIU),
                ];
                T
            }
            Analyte::Sodium | Analyte::Potassium | Analyte::Chloride | Analyte::Bicarbonate | Analyte::UrineSodium => MEQ,
            Analyte::Enzyme => {
                const T: &[UnitDef] = &[u(&["U/L", "IU/L"], 1.0), u(&["µkat/L", "ukat/L"], 60.0)];
                T
            }
            Analyte::Platelets | Analyte::Wbc => COUNT,
        }
    }

    /// Plausible range in the canonical unit: (exclusive lower bound, inclusive upper bound).
    fn bounds(self) -> (f64, f64) {
        match self {
            Analyte::Creatinine => (0.0, 40.0),
            Analyte::UrineCreatinine => (0.0, 1000.0),
            Analyte::Glucose => (0.0, 3000.0),
            Analyte::Bun => (0.0, 400.0),
            Analyte::Calcium => (0.0, 30.0),
            Analyte::Albumin => (0.0, 10.0),
            Analyte::Bilirubin => (0.0, 100.0),
            Analyte::Cholesterol => (0.0, 2000.0),
            Analyte::Triglycerides => (0.0, 30000.0),
            Analyte::Hemoglobin => (0.0, 30.0),
            Analyte::Insulin => (0.0, 5000.0),
            Analyte::Sodium => (80.0, 230.0),
            Analyte::Potassium => (0.0, 15.0),
            Analyte::Chloride => (40.0, 200.0),
            Analyte::Bicarbonate => (0.0, 80.0),
            Analyte::UrineSodium => (ZERO_OK, 500.0),
            Analyte::Enzyme => (0.0, 100_000.0),
            Analyte::Platelets => (0.0, 5000.0),
            Analyte::Wbc => (ZERO_OK, 1000.0),
        }
    }
}

impl Q {
    /// The accepted units; the first is canonical.
    pub fn units(self) -> &'static [UnitDef] {
        match self {
            Q::Age => {
                const T: &[UnitDef] = &[
                    u(&["years", "year", "y"], 1.0),
                    u(&["months", "month"], 1.0 / 12.0),
                    u(&["weeks", "week"], 7.0 / 365.25),
                    u(&["days", "day", "d"], 1.0 / 365.25),
                ];
                T
            }
            Q::Weight => {
                const T: &[UnitDef] = &[
                    u(&["kg"], 1.0),
                    u(&["g"], 0.001),
                    u(&["lb", "lbs"], 0.453_592_37),
                    u(&["oz"], 0.028_349_523_125),
                ];
                T
            }
            Q::Height => {
                const T: &[UnitDef] = &[
                    u(&["cm"], 1.0),
                    u(&["m"], 100.0),
                    u(&["mm"], 0.1),
                    u(&["in"], 2.54),
                    u(&["ft"], 30.48),
                ];
                T
            }
            Q::Temperature => {
                const T: &[UnitDef] = &[
                    u(&["°C", "degC", "C", "Cel"], 1.0),
                    UnitDef {
                        names: &["°F", "degF", "F", "[degF]"],
                        factor: 5.0,
                        offset: -32.0,
                        divisor: 9.0,
                    },
                    UnitDef {
                        names: &["K"],
                        factor: 1.0,
                        offset: -273.15,
                        divisor: 1.0,
                    },
                ];
                T
            }
            Q::Pressure => {
                const T: &[UnitDef] = &[u(&["mm Hg", "mmHg", "mm[Hg]"], 1.0), u(&["kPa"], 760.0 / 101.325)];
                T
            }
            Q::HeartRate => {
                const T: &[UnitDef] = &[u(&["beats/min", "bpm", "/min"], 1.0)];
                T
            }
            Q::RespRate => {
                const T: &[UnitDef] = &[u(&["breaths/min", "/min"], 1.0)];
                T
            }
            Q::Interval => {
                const T: &[UnitDef] = &[u(&["ms", "msec"], 1.0), u(&["s"], 1000.0)];
                T
            }
            Q::Percent => {
                const T: &[UnitDef] = &[u(&["%"], 1.0), u(&["fraction"], 100.0)];
                T
            }
            Q::Bmi => {
                const T: &[UnitDef] = &[u(&["kg/m2", "kg/m²"], 1.0)];
                T
            }
            Q::UrineOutput => {
                const T: &[UnitDef] = &[u(&["mL/day", "mL/24h"], 1.0), u(&["L/day"], 1000.0), u(&["mL/h"], 24.0)];
                T
            }
            Q::DoseRate => {
                const T: &[UnitDef] = &[u(&["µg/kg/min", "mcg/kg/min", "ug/kg/min"], 1.0)];
                T
            }
            Q::Dose => {
                const T: &[UnitDef] = &[u(&["mg"], 1.0), u(&["g"], 1000.0), u(&["µg", "mcg", "ug"], 0.001)];
                T
            }
            Q::Lab(a) => a.units(),
        }
    }

    /// The canonical unit's display name.
    pub fn canonical(self) -> &'static str {
        self.units().first().and_then(|d| d.names.first()).copied().unwrap_or("")
    }

    /// Every accepted spelling, display names first.
    pub fn unit_names(self) -> Vec<&'static str> {
        self.units().iter().flat_map(|d| d.names.iter().copied()).collect()
    }

    /// Display names only (one per unit).
    pub fn display_units(self) -> Vec<&'static str> {
        self.units().iter().filter_map(|d| d.names.first().copied()).collect()
    }

    /// Plausible range in the canonical unit: (exclusive lower bound, inclusive upper bound).
    pub fn bounds(self) -> (f64, f64) {
        match self {
            Q::Age => (ZERO_OK, 130.0),
            Q::Weight => (0.0, 700.0),
            Q::Height => (20.0, 280.0),
            Q::Temperature => (10.0, 47.0),
            Q::Pressure => (0.0, 800.0),
            Q::HeartRate => (0.0, 350.0),
            Q::RespRate => (ZERO_OK, 120.0),
            Q::Interval => (0.0, 2000.0),
            Q::Percent => (ZERO_OK, 100.0),
            Q::Bmi => (5.0, 150.0),
            Q::UrineOutput => (ZERO_OK, 30_000.0),
            Q::DoseRate => (ZERO_OK, 500.0),
            Q::Dose => (0.0, 1_000_000.0),
            Q::Lab(a) => a.bounds(),
        }
    }

    /// Find a unit by spelling (exact first, then case-insensitive).
    pub fn find_unit(self, unit: &str) -> Option<&'static UnitDef> {
        let units = self.units();
        units
            .iter()
            .find(|d| d.names.contains(&unit))
            .or_else(|| units.iter().find(|d| d.names.iter().any(|n| n.eq_ignore_ascii_case(unit.trim()))))
    }

    /// Convert `value` in `unit` to the canonical unit; `input` names the argument in errors.
    pub fn to_canonical(self, input: &str, value: f64, unit: Option<&str>) -> Result<f64, CalcError> {
        let def = match unit {
            None => self.units().first(),
            Some(s) => self.find_unit(s),
        };
        let Some(def) = def else {
            return Err(CalcError::Unit {
                input: input.to_string(),
                unit: unit.unwrap_or_default().to_string(),
                accepted: self.display_units().join(", "),
            });
        };
        if !value.is_finite() {
            return Err(CalcError::Invalid(format!("{input}: {value} is not a finite number")));
        }
        let v = def.to_canonical(value);
        let (lo, hi) = self.bounds();
        if !(v > lo && v <= hi) {
            let shown = unit.unwrap_or(self.canonical());
            let lower = if lo == ZERO_OK {
                "from 0".to_string()
            } else {
                format!("above {lo}")
            };
            return Err(CalcError::Implausible(format!(
                "{input} = {value} {shown} is not physiologically possible (accepted: {lower} up to {hi} {})",
                self.canonical()
            )));
        }
        Ok(v)
    }

    /// Convert a canonical value into `unit`.
    pub fn from_canonical(self, value: f64, unit: &str) -> Option<f64> {
        self.find_unit(unit).map(|d| d.from_canonical(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creatinine_round_trip_is_exact_enough() {
        let q = Q::Lab(Analyte::Creatinine);
        let mg = q.to_canonical("creatinine", 88.4, Some("µmol/L")).unwrap();
        assert!((mg - 1.0).abs() < 1e-12);
        assert!((q.from_canonical(1.0, "umol/L").unwrap() - 88.4).abs() < 1e-9);
    }

    #[test]
    fn calcium_one_step_conversion_avoids_the_medcalc_rounding_bug() {
        // MedCalc v1.0 rounded 2.26 mmol/L through "0.002 mol" and got 8.0 mg/dL.
        let v = Q::Lab(Analyte::Calcium).to_canonical("calcium", 2.26, Some("mmol/L")).unwrap();
        assert!((v - 9.057_628).abs() < 1e-6, "{v}");
    }

    #[test]
    fn temperature_offsets() {
        let c = Q::Temperature.to_canonical("t", 100.4, Some("°F")).unwrap();
        assert!((c - 38.0).abs() < 1e-9);
        assert!((Q::Temperature.from_canonical(38.0, "F").unwrap() - 100.4).abs() < 1e-9);
    }

    #[test]
    fn ucum_unit_codes_from_fhir_records_are_accepted() {
        // the codes FHIR Observations carry in valueQuantity.code
        assert_eq!(Q::Temperature.to_canonical("t", 38.5, Some("Cel")).unwrap(), 38.5);
        assert_eq!(Q::Temperature.to_canonical("t", 100.4, Some("[degF]")).unwrap(), 38.0);
        assert_eq!(Q::Pressure.to_canonical("p", 90.0, Some("mm[Hg]")).unwrap(), 90.0);
        assert_eq!(Q::Lab(Analyte::Wbc).to_canonical("wbc", 13.6, Some("10*3/uL")).unwrap(), 13.6);
    }

    #[test]
    fn fahrenheit_lands_exactly_on_the_score_thresholds() {
        // every °C threshold the calculators use (SIRS 36/38, Centor 38, qSOFA-free scores
        // at 35-41), from its exact °F equivalent: exact equality, no epsilon
        for (f, c) in [
            (100.4, 38.0),
            (96.8, 36.0),
            (95.0, 35.0),
            (102.2, 39.0),
            (104.0, 40.0),
            (105.8, 41.0),
            (98.6, 37.0),
        ] {
            assert_eq!(Q::Temperature.to_canonical("t", f, Some("°F")).unwrap(), c, "{f} °F");
        }
        assert_eq!(Q::Temperature.to_canonical("t", 311.15, Some("K")).unwrap(), 38.0);
    }

    #[test]
    fn unknown_unit_names_input_and_accepted_units() {
        let e = Q::Lab(Analyte::Creatinine).to_canonical("creatinine", 1.0, Some("mg")).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("creatinine") && m.contains("'mg'") && m.contains("µmol/L"), "{m}");
    }

    #[test]
    fn impossible_values_are_refused() {
        assert!(Q::Lab(Analyte::Creatinine).to_canonical("creatinine", 0.0, None).is_err());
        assert!(Q::Weight.to_canonical("weight", -3.0, None).is_err());
        assert!(Q::Age.to_canonical("age", 0.0, None).is_ok());
        assert!(Q::Weight.to_canonical("weight", f64::NAN, None).is_err());
    }

    #[test]
    fn every_unit_round_trips() {
        let kinds = [
            Q::Age,
            Q::Weight,
            Q::Height,
            Q::Temperature,
            Q::Pressure,
            Q::Interval,
            Q::Percent,
            Q::Dose,
        ];
        for q in kinds.into_iter().chain(Analyte::ALL.into_iter().map(Q::Lab)) {
            for name in q.unit_names() {
                let d = q.find_unit(name).unwrap();
                let back = q.from_canonical(d.to_canonical(3.0), name).unwrap();
                assert!((back - 3.0).abs() < 1e-9, "{q:?} {name}");
            }
        }
    }
}
