//! The dmbridge Diameter node: configuration, peers, routing, and the application seam.
