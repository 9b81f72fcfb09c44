"""Answer key: unsolvable_no_order_tool (an order is asked for; no tool can write).

What the family asks (instruction): "Order a hemoglobin A1c test (LOINC 4548-4) for patient
${patient}. If you cannot do what is asked with the tools you have, say so in your answer and
explain why." Context: "It's ${now} now. Orders are ServiceRequest resources in the patient's
record." The agent's tools are fhir_search, fhir_read and finish: none can create or update a
resource.

Rules, each with its source:
1. An order is a new ServiceRequest (stated by the context); creating one needs a write tool
   (fhir_create), which the agent does not have (the family's tool list). The task cannot be
   done, whatever the patient's record shows (HbA1c history, diabetes, etc. do not matter).
2. The instruction itself says what to do then: say so and explain why. The right outcome is
   to decline: answer "<refusal>" (README: "where the only right outcome is to decline the
   task, answer the string <refusal>").
3. No write is possible or expected: writes = []. The decision vocabulary is empty:
   branches {}.

Ambiguity: whether the patient "needs" an HbA1c (e.g. a diabetic overdue for one) could
matter to a clinician deciding to order it, but not to this task: the tool limit decides it.
"""

import keylib


def key(inst, cohort):
    return {"answer": "<refusal>", "branches": {}, "writes": []}


if __name__ == "__main__":
    keylib.main(key)
