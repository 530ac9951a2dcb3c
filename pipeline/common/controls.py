"""The regulatory controls that rules and reports may cite (from the team's CONTROLS.md).

A rule in ``policies/`` names the controls it evidences by these ids; an id not listed here
is a policy error, so a report never cites a control nobody checked. Titles are short
paraphrases of the source texts, for tables in the compliance report.
"""

from __future__ import annotations

CONTROLS: dict[str, str] = {
    # EU AI Act, Regulation (EU) 2024/1689
    "EU AI Act Art. 9": "risk management system",
    "EU AI Act Art. 10(2)": "data governance and management practices",
    "EU AI Act Art. 10(2)(f)": "examination in view of possible biases",
    "EU AI Act Art. 10(2)(g)": "measures to detect, prevent and mitigate possible biases",
    "EU AI Act Art. 10(3)": "data relevant, sufficiently representative, free of errors, complete",
    "EU AI Act Art. 10(5)": "special categories of personal data for bias detection, with safeguards",
    "EU AI Act Art. 11": "technical documentation",
    "EU AI Act Annex IV 2(d)": "data requirements: datasheets, provenance, labelling, cleaning",
    "EU AI Act Annex IV 2(g)": "validation and testing procedures, metrics, dated and signed test reports",
    "EU AI Act Art. 12": "record-keeping: automatic logging of events",
    "EU AI Act Art. 13": "transparency and provision of information to deployers",
    "EU AI Act Art. 14": "human oversight",
    "EU AI Act Art. 15": "accuracy, robustness and cybersecurity",
    "EU AI Act Art. 18": "documentation keeping",
    "EU AI Act Art. 72": "post-market monitoring",
    # NIST AI RMF 1.0
    "NIST AI RMF GOVERN 1": "policies, processes and procedures in place and transparent",
    "NIST AI RMF GOVERN 6": "third-party risks: data, software, pretrained models",
    "NIST AI RMF MAP 4": "risks and benefits of all components, including third-party ones",
    "NIST AI RMF MEASURE 2.3": "performance demonstrated for conditions similar to deployment",
    "NIST AI RMF MEASURE 2.7": "security and resilience evaluated",
    "NIST AI RMF MEASURE 2.10": "privacy risk examined and documented",
    "NIST AI RMF MEASURE 2.11": "fairness and bias evaluated, results documented",
    "NIST AI RMF MANAGE 4": "post-deployment monitoring, change and incident handling",
    # ISO/IEC 42001:2023 Annex A
    "ISO/IEC 42001 A.2": "AI policy",
    "ISO/IEC 42001 A.6.2.4": "AI system verification and validation",
    "ISO/IEC 42001 A.6.2.6": "AI system operation and monitoring",
    "ISO/IEC 42001 A.6.2.7": "AI system technical documentation",
    "ISO/IEC 42001 A.6.2.8": "AI system recording of event logs",
    "ISO/IEC 42001 A.7.2": "data for development and enhancement of AI systems",
    "ISO/IEC 42001 A.7.3": "acquisition of data",
    "ISO/IEC 42001 A.7.4": "quality of data for AI systems",
    "ISO/IEC 42001 A.7.5": "data provenance",
    "ISO/IEC 42001 A.7.6": "data preparation",
    "ISO/IEC 42001 A.10": "third-party and customer relationships",
    # Privacy law
    "GDPR Art. 4(5)": "pseudonymisation",
    "GDPR Art. 5(1)(c)": "data minimisation",
    "GDPR Art. 17": "right to erasure",
    "GDPR Art. 25": "data protection by design and by default",
    "GDPR Art. 32": "security of processing",
    "GDPR Art. 35": "data protection impact assessment",
    "CCPA §1798.105": "consumer's right to delete",
}
