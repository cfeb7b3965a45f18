<?xml version="1.0"?>
<!-- Copies a document with its XIncludes resolved (the xinclude option of xsltproc), for pandoc, whose
     DocBook reader does not resolve them. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="@*|node()">
    <xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy>
  </xsl:template>
</xsl:stylesheet>
