import TesseraCore

extension Endpoint {
  /// The labels an endpoint's identity is derived from: request labels, then
  /// workload labels (which win on a shared key), then the namespace label.
  static func labels(request: LabelSet, workload: LabelSet, namespace: String) -> LabelSet {
    let namespaceLabel = LabelSet(validated: [
      Label(source: Label.Source.kubernetes, key: namespaceLabelKey, value: namespace)
    ])
    return request.merging(workload).merging(namespaceLabel)
  }
}
