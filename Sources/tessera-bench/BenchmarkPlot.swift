import Foundation

/// A small dependency-free SVG line chart: panels side by side, a log
/// endpoint-count axis, one line per design.
struct BenchmarkPlot {
  struct Series {
    var name: String
    var points: [(x: Double, y: Double)]
  }

  struct Panel {
    var title: String
    var unit: String
    var logarithmic: Bool
    var series: [Series]
  }

  var panels: [Panel]

  static let colors = [
    "tessera": "#1f77b4", "iptables": "#d62728", "ipset": "#2ca02c", "nft": "#ff7f0e",
    "p50": "#1f77b4", "p99": "#9467bd",
  ]
  static let width = 360.0
  static let height = 280.0
  static let margin = (left: 62.0, right: 26.0, top: 34.0, bottom: 44.0)

  func svg() -> String {
    let total = Double(panels.count) * Self.width
    var body = ""
    for (index, panel) in panels.enumerated() {
      body +=
        "<g transform=\"translate(\(Double(index) * Self.width),0)\">\n" + Self.render(panel)
        + "</g>\n"
    }
    return """
      <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(total))" height="\(Int(Self.height + 24))" font-family="sans-serif" font-size="11">
      <rect width="100%" height="100%" fill="white"/>
      \(body)<text x="\(Int(total / 2))" y="\(Int(Self.height + 16))" text-anchor="middle" fill="#555">endpoints in the selected group / live endpoints (log scale)</text>
      </svg>

      """
  }

  private static func render(_ panel: Panel) -> String {
    let all = panel.series.flatMap(\.points).filter { $0.y.isFinite }
    guard !all.isEmpty else { return "" }
    let plotLeft = margin.left
    let plotRight = width - margin.right
    let plotTop = margin.top
    let plotBottom = height - margin.bottom
    let xs = all.map(\.x)
    let (xMin, xMax) = (log10(xs.min()!), log10(xs.max()!))
    func x(_ value: Double) -> Double {
      xMax == xMin
        ? (plotLeft + plotRight) / 2
        : plotLeft + (log10(value) - xMin) / (xMax - xMin) * (plotRight - plotLeft)
    }
    let yTransform: (Double) -> Double = panel.logarithmic ? { log10(max($0, 0.01)) } : { $0 }
    var yMin = all.map { yTransform($0.y) }.min()!
    var yMax = all.map { yTransform($0.y) }.max()!
    if panel.logarithmic {
      yMin = floor(yMin)
      yMax = ceil(yMax)
    } else {
      yMin = min(0, yMin)
      yMax = yMax <= yMin ? yMin + 1 : yMax * 1.1
    }
    if yMax == yMin { yMax = yMin + 1 }
    func y(_ value: Double) -> Double {
      plotBottom - (yTransform(value) - yMin) / (yMax - yMin) * (plotBottom - plotTop)
    }

    var out =
      "<text x=\"\(width / 2)\" y=\"16\" text-anchor=\"middle\" font-weight=\"bold\">\(escape(panel.title))</text>\n"
    out +=
      "<text x=\"12\" y=\"\((plotTop + plotBottom) / 2)\" transform=\"rotate(-90 12 \((plotTop + plotBottom) / 2))\" text-anchor=\"middle\">\(escape(panel.unit))</text>\n"
    out +=
      "<line x1=\"\(plotLeft)\" y1=\"\(plotBottom)\" x2=\"\(plotRight)\" y2=\"\(plotBottom)\" stroke=\"#333\"/>\n"
    out +=
      "<line x1=\"\(plotLeft)\" y1=\"\(plotTop)\" x2=\"\(plotLeft)\" y2=\"\(plotBottom)\" stroke=\"#333\"/>\n"
    for tick in Set(xs).sorted() {
      out +=
        "<text x=\"\(x(tick))\" y=\"\(plotBottom + 14)\" text-anchor=\"middle\">\(Int(tick))</text>\n"
    }
    let yTicks: [Double] =
      panel.logarithmic
      ? stride(from: yMin, through: yMax, by: 1).map { pow(10, $0) }
      : (0...4).map { yMin + (yMax - yMin) * Double($0) / 4 }
    for tick in yTicks {
      out +=
        "<line x1=\"\(plotLeft)\" y1=\"\(y(tick))\" x2=\"\(plotRight)\" y2=\"\(y(tick))\" stroke=\"#eee\"/>\n"
      out +=
        "<text x=\"\(plotLeft - 4)\" y=\"\(y(tick) + 4)\" text-anchor=\"end\">\(format(tick))</text>\n"
    }
    for (index, series) in panel.series.enumerated() {
      let color = colors[series.name] ?? "#000"
      let points = series.points.filter { $0.y.isFinite }.map { "\(x($0.x)),\(y($0.y))" }
      out +=
        "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(points.joined(separator: " "))\"/>\n"
      for point in series.points where point.y.isFinite {
        out += "<circle cx=\"\(x(point.x))\" cy=\"\(y(point.y))\" r=\"3\" fill=\"\(color)\"/>\n"
      }
      let legendY = plotTop + 4 + Double(index) * 14
      out +=
        "<rect x=\"\(plotLeft + 8)\" y=\"\(legendY - 8)\" width=\"10\" height=\"3\" fill=\"\(color)\"/>"
      out += "<text x=\"\(plotLeft + 22)\" y=\"\(legendY - 3)\">\(escape(series.name))</text>\n"
    }
    return out
  }

  private static func escape(_ text: String) -> String {
    text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
      .replacingOccurrences(of: ">", with: "&gt;")
  }
}
