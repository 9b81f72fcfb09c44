"""Independent answer key: qtc_review.

WHAT THE FAMILY ASKS
    From the patient's most recent ECG (Observation LOINC 11524-6 with components QT interval
    8634-8 in ms and heart rate 8867-4 in /min) compute the QTc by Bazett; if it is above
    480 ms order a repeat ECG (ServiceRequest SNOMED CT 29303009). Report the QTc in ms rounded
    to a whole number, or -1 if there is no ECG on file.

RULES AND SOURCES
    Bazett HC, Heart 1920;7:353-370 (formula restated by the instruction):
        RR (s) = 60 / heart rate;  QTc = QT / sqrt(RR).
    Threshold "above 480 ms" -> repeat ECG: stated by the instruction (480 ms is the usual
        "markedly prolonged" cut-off, e.g. AHA/ACCF 2010 scientific statement on prevention of
        torsade de pointes in hospital settings; 500 ms the high-risk one).
    Fridericia (QT / RR^(1/3)) is computed only for the report (instances where Bazett and
        Fridericia fall on opposite sides of 480 ms); it never changes the key.

READING THE RECORD
    "Most recent ECG" = the 11524-6 Observation with the latest effective time not after now
        (status entered-in-error/cancelled ignored). The heart rate is the ECG's own 8867-4
        component (not a separate vital-sign Observation). QT in seconds (unit "s") would be
        multiplied by 1000; every ECG in the cohort is in ms and /min.
    If the latest ECG lacks a QT or a heart-rate component, no QTc can be computed from "the
        most recent ECG": the key then treats it like no usable ECG (answer -1, branch
        "no_ecg"). This does not occur in the cohort.

AMBIGUITIES AND HOW THIS KEY READS THEM
    * The 480 ms comparison uses the unrounded QTc (the rounding is for the report only);
      "above" is strict (> 480). The report lists any instance where rounding would change
      the side (unrounded QTc in (479.5, 480.5]) - none here.
    * Bazett is used even when the rate is irregular (AF) or fast, as the instruction fixes
      the formula; such instances are flagged in the report.
"""

import math

import keylib

LOINC_ECG, LOINC_QT, LOINC_HR = "11524-6", "8634-8", "8867-4"


def latest_ecg(cohort, pid, now):
    best = None
    for obs in cohort.of_patient("Observation", pid):
        if obs.get("status") in ("entered-in-error", "cancelled"):
            continue
        if not keylib.has_code(obs.get("code"), LOINC_ECG, keylib.LOINC):
            continue
        t = keylib.effective(obs)
        if t is None or t > now:
            continue
        if best is None or t > keylib.effective(best):
            best = obs
    return best


def component(obs, loinc):
    for comp in obs.get("component", []):
        if keylib.has_code(comp.get("code"), loinc, keylib.LOINC) and "valueQuantity" in comp:
            return comp["valueQuantity"]
    return None


def qt_ms(q):
    u = (q.get("code") or q.get("unit") or "ms").strip()
    v = float(q["value"])
    return {"ms": v, "s": v * 1000.0}[u]


def hr_per_min(q):
    u = (q.get("code") or q.get("unit") or "/min").strip()
    v = float(q["value"])
    return {"/min": v, "{beats}/min": v, "beats/min": v, "bpm": v}[u]


def key(inst, cohort):
    pid = inst["patient"]
    now = keylib.parse_instant(inst["now"])
    ecg = latest_ecg(cohort, pid, now)
    qt = component(ecg, LOINC_QT) if ecg else None
    hr = component(ecg, LOINC_HR) if ecg else None
    if ecg is None or qt is None or hr is None or float(hr["value"]) <= 0:
        return {"answer": -1, "branches": {"act": "no_ecg"}, "writes": []}

    rr = 60.0 / hr_per_min(hr)                 # seconds
    qtc = qt_ms(qt) / math.sqrt(rr)            # Bazett
    answer = int(math.floor(qtc + 0.5))        # whole ms, half up
    if qtc > 480.0:
        return {"answer": answer, "branches": {"act": "has_ecg", "act.rule": "prolonged"},
                "writes": [keylib.write("create", "ServiceRequest", "29303009")]}
    return {"answer": answer, "branches": {"act": "has_ecg", "act.rule": "normal"}, "writes": []}


if __name__ == "__main__":
    keylib.main(key)
